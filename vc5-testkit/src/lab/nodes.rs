//! Names and addresses of the nodes, running commands and closures inside them,
//! and the routes and XDP set-up of the lab network.

use super::*;

impl Lab {
    pub(super) fn node(&self, name: &str) -> &Node {
        self.nodes
            .iter()
            .find(|n| n.name == name)
            .unwrap_or_else(|| panic!("lab {} has no node {name:?}", self.id))
    }

    /// The real name of a node's network namespace (for `ip netns exec`, `ip -n`).
    pub fn ns(&self, name: &str) -> String {
        self.node(name).ns.clone()
    }

    /// Every node name, `client`, `router`, `switch`, `lb1`…, `real1`….
    pub fn names(&self) -> Vec<String> {
        self.nodes.iter().map(|n| n.name.clone()).collect()
    }

    /// `lb1`, `lb2`, …
    pub fn load_balancers(&self) -> Vec<String> {
        self.names_of(Kind::Lb)
    }

    /// `real1`, `real2`, …
    pub fn reals(&self) -> Vec<String> {
        self.names_of(Kind::Real)
    }

    /// `remote1`, `remote2`, …: the reals in the subnet behind the router.
    pub fn remote_reals(&self) -> Vec<String> {
        self.names_of(Kind::Remote)
    }

    /// `vreal1`, `vreal2`, …: the reals on VLANs 10 and 20.
    pub fn vlan_reals(&self) -> Vec<String> {
        self.names_of(Kind::VlanReal)
    }

    /// The VLAN of a VLAN real (10 or 20).
    pub fn vlan_of(&self, real: &str) -> u16 {
        let node = self.node(real);
        assert_eq!(node.kind, Kind::VlanReal, "{real} is on no VLAN");
        vlan_of_host(node.host)
    }

    /// The tagging relay running in `node` (`switch`, `lb1`, …), to read its counters.
    pub fn relay(&self, node: &str) -> &crate::vlan_relay::VlanRelay {
        self.relays
            .get(node)
            .unwrap_or_else(|| panic!("lab {} has no VLAN relay in {node:?}", self.id))
    }

    /// A remote real's `vc5-decap`, to read its counters.
    pub fn decap(&self, remote: &str) -> &crate::decap::Decap {
        self.decaps
            .get(remote)
            .unwrap_or_else(|| panic!("lab {} has no remote real {remote:?}", self.id))
    }

    pub(super) fn names_of(&self, kind: Kind) -> Vec<String> {
        let nodes = self.nodes.iter().filter(|n| n.kind == kind);
        nodes.map(|n| n.name.clone()).collect()
    }

    /// A node's IPv4 address on `eth0`: the client's on the client network, everyone
    /// else's on the LAN (the router's LAN side for `router`).
    pub fn addr4(&self, name: &str) -> Ipv4Addr {
        let node = self.node(name);
        match node.kind {
            Kind::Client => client_net4(node.host),
            Kind::Remote => remote_net4(node.host),
            Kind::VlanReal => vlan_net4(vlan_of_host(node.host), node.host),
            Kind::Switch => panic!("the switch has no address"),
            _ => Ipv4Addr::new(203, 0, 113, node.host),
        }
    }

    /// A node's IPv6 address on `eth0`, as [`Lab::addr4`].
    pub fn addr6(&self, name: &str) -> Ipv6Addr {
        let node = self.node(name);
        match node.kind {
            Kind::Client => client_net6(node.host),
            Kind::Remote => remote_net6(node.host),
            Kind::VlanReal => vlan_net6(vlan_of_host(node.host), node.host),
            Kind::Switch => panic!("the switch has no address"),
            _ => Ipv6Addr::new(0x2001, 0xdb8, 2, 0, 0, 0, 0, hex_like(node.host)),
        }
    }

    /// The MAC address of a node's `eth0` (fixed, so captures are easy to read).
    pub fn mac(&self, name: &str) -> [u8; 6] {
        let node = self.node(name);
        match node.kind {
            Kind::Client => client_net_mac(node.host),
            Kind::Remote => remote_mac(node.host),
            Kind::VlanReal => vlan_mac(vlan_of_host(node.host), node.host),
            Kind::Switch => panic!("the switch has no eth0"),
            _ => lan_mac(node.host),
        }
    }

    /// The VIPs, IPv4 first.
    pub fn vips(&self) -> [IpAddr; 2] {
        [self.vip4.into(), self.vip6.into()]
    }

    /// `http://ADDR/PATH`, with the brackets an IPv6 address needs.
    pub fn url(addr: IpAddr, path: &str) -> String {
        let path = path.trim_start_matches('/');
        match addr {
            IpAddr::V4(a) => format!("http://{a}/{path}"),
            IpAddr::V6(a) => format!("http://[{a}]/{path}"),
        }
    }

    /// The lab's directory (configuration, logs, bpffs mounts).
    pub fn dir(&self) -> &Path {
        &self.dir
    }

    /// The bpffs mount of a load balancer, for vc5d's `--bpffs`. `ip netns exec` mounts a
    /// fresh /sys, so /sys/fs/bpf would not be visible in the namespace; this one is.
    pub fn bpffs(&self, lb: &str) -> PathBuf {
        assert_eq!(self.node(lb).kind, Kind::Lb, "{lb} is not a load balancer");
        self.dir.join("bpf").join(lb)
    }

    /// Where a real's HTTP server logs its requests, one line each.
    pub fn httpd_log(&self, real: &str) -> PathBuf {
        self.dir.join(format!("httpd-{real}.log"))
    }

    /// Where [`Lab::start_vc5d`] sends a load balancer's vc5d output (appended across
    /// restarts, each start preceded by a `=== ` line with its command).
    pub fn vc5d_log(&self, lb: &str) -> PathBuf {
        self.dir.join(format!("vc5d-{lb}.log"))
    }

    /// The configuration file [`Lab::start_vc5d`] passes.
    pub fn config_path(&self) -> PathBuf {
        self.dir.join("vc5d.yaml")
    }

    /// `ip netns exec <ns> argv…` with stdin closed, in its own process group so that a
    /// Ctrl-C meant for the lab's owner reaches only the owner, which then cleans up in order.
    pub fn command(&self, name: &str, argv: &[&str]) -> Command {
        let mut cmd = Command::new("ip");
        cmd.args(["netns", "exec", &self.ns(name)])
            .args(argv)
            .stdin(Stdio::null())
            .process_group(0);
        cmd
    }

    /// Runs a command in a namespace and returns its output, whatever its exit status.
    pub fn exec(&self, name: &str, argv: &[&str]) -> Result<Output> {
        let mut cmd = self.command(name, argv);
        cmd.output()
            .with_context(|| format!("running {argv:?} in {name}"))
    }

    /// Runs a command in a namespace; its stdout, or an error with its stderr.
    pub fn run(&self, name: &str, argv: &[&str]) -> Result<String> {
        run_cmd(&mut self.command(name, argv)).with_context(|| format!("in {name}"))
    }

    /// `sh -exc script` in a namespace: several commands for the price of one `netns exec`,
    /// with the trace of the failing one in the error.
    pub fn sh(&self, name: &str, script: &str) -> Result<String> {
        self.run(name, &["sh", "-exc", script])
    }

    /// Starts a command in a namespace, its stdout and stderr going to a log file in the lab
    /// directory (`LabChild::log`). The lab kills it, at the latest, when dropped.
    pub fn spawn(&self, name: &str, argv: &[&str]) -> Result<LabChild> {
        ensure!(!argv.is_empty(), "nothing to spawn");
        let prog = Path::new(argv[0]).file_name().unwrap_or_default();
        let seq = self.spawned.fetch_add(1, Ordering::Relaxed);
        let log = (self.dir).join(format!("{name}-{}-{seq}.log", prog.to_string_lossy()));
        spawn_logged(self.command(name, argv), &log)
    }

    /// Runs `f` on a thread that has entered a node's network namespace, so that sockets it
    /// opens (e.g. with [`http_get`]) live there. The rest of the process is unaffected.
    pub fn run_in<T: Send>(&self, name: &str, f: impl FnOnce() -> T + Send) -> Result<T> {
        let path = Path::new(NETNS_DIR).join(self.ns(name));
        std::thread::scope(|s| {
            s.spawn(|| {
                let ns = File::open(&path).with_context(|| format!("{}", path.display()))?;
                // SAFETY: setns(2) on a descriptor we own; it changes only this thread.
                if unsafe { libc::setns(ns.as_raw_fd(), libc::CLONE_NEWNET) } != 0 {
                    let e = std::io::Error::last_os_error();
                    return Err(anyhow!("setns into {}: {e}", path.display()));
                }
                Ok(f())
            })
            .join()
            .map_err(|_| anyhow!("thread in namespace {name} panicked"))?
        })
    }

    /// An HTTP GET made from a node with the curl binary; the body, or an error (curl's
    /// `--fail`: HTTP errors are errors). `extra` goes before the URL, so it can override
    /// the defaults (`--max-time 10`, `--connect-timeout 3`).
    pub fn curl(&self, name: &str, url: &str, extra: &[&str]) -> Result<String> {
        let mut argv = vec![
            "curl",
            "-sS",
            "--fail",
            "--max-time",
            "10",
            "--connect-timeout",
            "3",
        ];
        argv.extend_from_slice(extra);
        argv.push(url);
        self.run(name, &argv)
    }

    /// Makes the router send the VIPs (both families) to one node's LAN address, replacing
    /// the current routes: a load balancer, or a real to bypass load balancing altogether.
    pub fn route_vips_via(&self, target: &str) -> Result<()> {
        self.route_vips_ecmp(&[target])
    }

    /// Makes the router spread the VIPs over several nodes (ECMP, hashed on L4 ports).
    pub fn route_vips_ecmp(&self, targets: &[&str]) -> Result<()> {
        ensure!(!targets.is_empty(), "no next hop for the VIPs");
        let hops4: String = targets
            .iter()
            .map(|t| format!(" nexthop via {} dev eth0", self.addr4(t)))
            .collect();
        let hops6: String = targets
            .iter()
            .map(|t| format!(" nexthop via {} dev eth0", self.addr6(t)))
            .collect();
        self.sh(
            "router",
            &format!(
                "ip route replace {}/32{hops4}\nip -6 route replace {}/128{hops6}\n",
                self.vip4, self.vip6
            ),
        )?;
        Ok(())
    }

    /// Puts an `XDP_PASS` program on the switch side of every load balancer's veth, which
    /// native XDP on the load balancer's `eth0` needs for its `XDP_TX` frames to be
    /// delivered (generic mode does not). Idempotent.
    pub fn prepare_native_xdp(&self) -> Result<()> {
        let obj = self.dir.join("xdp-pass.o");
        if !obj.exists() {
            compile_bpf(XDP_PASS_C, &obj)?;
        }
        let obj = obj.to_str().context("lab directory is not UTF-8")?;
        for lb in self.load_balancers() {
            // `netns exec`, not `ip -n`: iproute2's loader mounts a bpffs on /sys/fs/bpf if
            // there is none, which must happen in a throwaway mount namespace, not the host's.
            let argv = [
                "ip", "link", "set", "dev", &lb, "xdpdrv", "obj", obj, "sec", "xdp",
            ];
            (self.run("switch", &argv))
                .with_context(|| format!("XDP on the switch port of {lb}"))?;
            ensure!(
                self.xdp_mode("switch", &lb)?.as_deref() == Some("xdp"),
                "the switch port of {lb} has no native XDP program after attaching one"
            );
        }
        Ok(())
    }

    /// The XDP attachment of an interface in a node, as `ip link` shows it: `Some("xdp")`
    /// for native, `Some("xdpgeneric")`, `Some("xdpoffload")`, `Some("xdpmulti")`, or None.
    pub fn xdp_mode(&self, name: &str, dev: &str) -> Result<Option<String>> {
        let mut cmd = Command::new("ip");
        cmd.args(["-n", &self.ns(name), "link", "show", "dev", dev]);
        let out = run_cmd(&mut cmd)?;
        let first = out.lines().next().unwrap_or_default();
        // Past "N: NAME:", so that a device called xdp… is not taken for a mode.
        Ok(first
            .split_whitespace()
            .skip(2)
            .find(|w| w.starts_with("xdp"))
            .map(str::to_string))
    }
}
