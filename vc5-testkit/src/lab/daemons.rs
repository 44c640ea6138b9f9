//! The daemons of a lab: BIRD on the router and the load balancers, vc5d and
//! vc5-flowsync, each started in its namespace with its log in the lab directory.

use super::*;

impl Lab {
    /// Runs BIRD on the router with `bird-examples/router.conf`: a BGP session to every
    /// load balancer, VIPs installed with ECMP. Replaces the static VIP routes.
    pub fn start_router_bird(&self) -> Result<LabChild> {
        let mut conf = BIRD_ROUTER_CONF.to_string();
        conf = define(&conf, "ROUTER_ADDRESS", &self.addr4("router").to_string());
        conf = define(&conf, "ROUTER_ASN", &ROUTER_ASN.to_string());
        conf = define(&conf, "LB_ASN", &LB_ASN.to_string());
        conf = define(&conf, "VIPS4", &format!("[ {}/32 ]", self.vip4));
        conf = define(&conf, "VIPS6", &format!("[ {}/128 ]", self.vip6));
        let lbs = self.load_balancers();
        for (i, name) in ["LB1", "LB2"].iter().enumerate() {
            match lbs.get(i) {
                Some(lb) => conf = define(&conf, name, &self.addr4(lb).to_string()),
                None => {
                    // No such load balancer: no session for it.
                    let proto = format!("protocol bgp lb{} ", i + 1);
                    conf = conf
                        .lines()
                        .filter(|l| {
                            !l.starts_with(&proto) && !l.starts_with(&format!("define {name}"))
                        })
                        .map(|l| format!("{l}\n"))
                        .collect();
                }
            }
        }
        self.sh(
            "router",
            &format!(
                "ip route del {}/32 || true\nip -6 route del {}/128 || true\n",
                self.vip4, self.vip6
            ),
        )?;
        self.start_bird("router", &conf)
    }

    /// Runs BIRD on a load balancer with `bird-examples/lb.conf`: it includes the file
    /// vc5d maintains (the lab's `--bird-include`) and announces its VIPs to the router;
    /// vc5d drives it over the lab's `--bird-socket`.
    pub fn start_lb_bird(&self, lb: &str) -> Result<LabChild> {
        let include = self.dir.join(format!("{lb}-bird-vips.conf"));
        if !include.exists() {
            // BIRD refuses to start without its include; vc5d rewrites it.
            fs::write(&include, "")?;
        }
        let mut conf = BIRD_LB_CONF.replace("/run/vc5/bird-vips.conf", &include.to_string_lossy());
        conf = define(&conf, "LB_ADDRESS", &self.addr4(lb).to_string());
        conf = define(&conf, "LB_ADDRESS6", &self.addr6(lb).to_string());
        conf = define(&conf, "LB_ASN", &LB_ASN.to_string());
        conf = define(&conf, "ROUTER1", &self.addr4("router").to_string());
        conf = define(&conf, "ROUTER_ASN", &ROUTER_ASN.to_string());
        conf = conf
            .lines()
            .filter(|l| !l.starts_with("protocol bgp router2 ") && !l.starts_with("define ROUTER2"))
            .map(|l| format!("{l}\n"))
            .collect();
        self.start_bird(lb, &conf)
    }

    /// BIRD's control socket in a node (the lab's `--bird-socket` for a load balancer).
    pub fn bird_socket(&self, name: &str) -> PathBuf {
        self.dir.join(format!("{name}-bird.ctl"))
    }

    pub(super) fn start_bird(&self, name: &str, conf: &str) -> Result<LabChild> {
        let log = self.dir.join(format!("{name}-bird.log"));
        let conf = conf.replace(
            "log syslog all;",
            &format!("log \"{}\" all;", log.display()),
        );
        let path = self.dir.join(format!("{name}-bird.conf"));
        fs::write(&path, conf)?;
        let sock = self.bird_socket(name);
        let _ = fs::remove_file(&sock);
        let (p, s) = (path.to_string_lossy(), sock.to_string_lossy());
        self.run(name, &["bird", "-p", "-c", &p])
            .with_context(|| format!("{} does not parse", path.display()))?;
        let child = self.spawn(name, &["bird", "-f", "-c", &p, "-s", &s])?;
        retry(Duration::from_secs(10), || {
            self.birdc(name, "show status").map(|_| ())
        })
        .with_context(|| format!("BIRD on {name} does not answer"))?;
        Ok(child)
    }

    /// `birdc -s <socket> <command>` for the BIRD of a node.
    pub fn birdc(&self, name: &str, command: &str) -> Result<String> {
        let sock = self.bird_socket(name);
        let mut argv = vec!["birdc", "-s"];
        let s = sock.to_string_lossy();
        argv.push(&s);
        argv.extend(command.split_whitespace());
        self.run(name, &argv)
    }

    /// The vc5d binary `start_vc5d` runs.
    pub fn vc5d_path(&self) -> Result<PathBuf> {
        if let Some(p) = &self.opts.vc5d {
            return Ok(p.clone());
        }
        if let Some(p) = std::env::var_os("VC5D") {
            return Ok(p.into());
        }
        let exe = std::env::current_exe()?;
        let dir = exe.parent().context("executable has no directory")?;
        // Test binaries live in target/<profile>/deps/, vc5d one level up.
        for d in [Some(dir), dir.parent()].into_iter().flatten() {
            let p = d.join("vc5d");
            if p.is_file() {
                return Ok(p);
            }
        }
        bail!(
            "no vc5d beside {} (build it with `cargo build --bin vc5d`, or set $VC5D)",
            exe.display()
        )
    }

    /// Starts vc5d in a load balancer's namespace:
    /// `vc5d --config <config_path> --interface eth0 --address <lb's LAN IPv4>
    /// --xdp-mode <mode> --bpffs <bpffs(lb)> --dbus none --bird-socket <dir>/<lb>-bird.ctl
    /// --bird-include <dir>/<lb>-bird-vips.conf <extra…>`, output appended to
    /// [`Lab::vc5d_log`]. The configuration is [`Lab::write_config`]'s unless one was
    /// written already. `--dbus`, `--bird-socket` and `--bird-include` in `extra` replace
    /// the lab's; those defaults keep the lab's vc5d off the host's bus, BIRD and /run/vc5.
    /// Its console keeps its default address, which is private to the namespace:
    /// `lab.curl(lb, "http://127.0.0.1:8080/metrics", &[])` reads it.
    pub fn start_vc5d(&self, lb: &str, xdp_mode: &str, extra: &[&str]) -> Result<LabChild> {
        let vc5d = self.vc5d_path()?;
        ensure!(vc5d.is_file(), "vc5d not found at {}", vc5d.display());
        if !self.config_path().exists() {
            self.write_config()?;
        }
        let config = self.config_of(lb);
        let path = |p: PathBuf| p.to_string_lossy().into_owned();
        let mut args: Vec<String> = vec![
            "--config".into(),
            path(config),
            "--interface".into(),
            "eth0".into(),
            "--address".into(),
            self.addr4(lb).to_string(),
            "--xdp-mode".into(),
            xdp_mode.into(),
            "--bpffs".into(),
            path(self.bpffs(lb)),
        ];
        let defaults = [
            ("--dbus", "none".to_string()),
            (
                "--bird-socket",
                path(self.dir.join(format!("{lb}-bird.ctl"))),
            ),
            (
                "--bird-include",
                path(self.dir.join(format!("{lb}-bird-vips.conf"))),
            ),
        ];
        for (flag, value) in defaults {
            let given = |a: &&str| **a == *flag || a.starts_with(&format!("{flag}="));
            if !extra.iter().any(given) {
                args.push(flag.into());
                args.push(value);
            }
        }
        args.extend(extra.iter().map(|s| s.to_string()));

        let log = self.vc5d_log(lb);
        let mut f = OpenOptions::new().create(true).append(true).open(&log)?;
        writeln!(f, "=== {} {}", vc5d.display(), args.join(" "))?;
        let mut cmd = self.command(lb, &[]);
        cmd.arg(&vc5d).args(&args);
        Ok(spawn_logged(cmd, &log)?.in_node(lb))
    }

    /// The vc5-flowsync binary [`Lab::start_flowsync`] runs: `LabOptions::vc5_flowsync`,
    /// else `$VC5_FLOWSYNC`, else the `vc5-flowsync` beside vc5d (cargo builds both into
    /// `target/<profile>/`).
    pub fn flowsync_path(&self) -> Result<PathBuf> {
        if let Some(p) = &self.opts.vc5_flowsync {
            return Ok(p.clone());
        }
        if let Some(p) = std::env::var_os("VC5_FLOWSYNC") {
            return Ok(p.into());
        }
        let vc5d = self.vc5d_path()?;
        let p = vc5d.with_file_name("vc5-flowsync");
        ensure!(
            p.is_file(),
            "no vc5-flowsync beside {} (build it with `cargo build -p vc5-xdp --bin \
             vc5-flowsync`, or set $VC5_FLOWSYNC)",
            vc5d.display()
        );
        Ok(p)
    }

    /// Where [`Lab::start_flowsync`] sends a load balancer's vc5-flowsync output (appended
    /// across restarts, each start preceded by a `=== ` line with its command).
    pub fn flowsync_log(&self, lb: &str) -> PathBuf {
        self.dir.join(format!("vc5-flowsync-{lb}.log"))
    }

    /// Starts vc5-flowsync in a load balancer's namespace: `vc5-flowsync --config
    /// <config_of(lb)> --interface eth0 --address <lb's LAN IPv4> --bpffs <bpffs(lb)>`,
    /// output appended to [`Lab::flowsync_log`]. It waits for vc5d's pinned maps itself,
    /// so it may start before or after vc5d.
    pub fn start_flowsync(&self, lb: &str) -> Result<LabChild> {
        let bin = self.flowsync_path()?;
        let path = |p: PathBuf| p.to_string_lossy().into_owned();
        let args = [
            "--config".to_string(),
            path(self.config_of(lb)),
            "--interface".into(),
            "eth0".into(),
            "--address".into(),
            self.addr4(lb).to_string(),
            "--bpffs".into(),
            path(self.bpffs(lb)),
        ];
        let log = self.flowsync_log(lb);
        let mut f = OpenOptions::new().create(true).append(true).open(&log)?;
        writeln!(f, "=== {} {}", bin.display(), args.join(" "))?;
        let mut cmd = self.command(lb, &[]);
        cmd.arg(&bin).args(args);
        spawn_logged(cmd, &log)
    }
}
