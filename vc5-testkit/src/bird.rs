//! Test and lab support: network namespaces joined by veth pairs, and BIRD,
//! FRR (bgpd) and GoBGP daemons started inside them with private files.
//!
//! Used by the crate's integration tests and by `vc5-rhi-bench`; not used by
//! the announcer itself. Everything here needs root. Every object cleans up
//! when dropped: daemons are killed by their process id, namespaces deleted.
//! Names are unique per process (`vc5t-<pid>-<n>-<tag>`, see [`crate::netns`]), paths live in a
//! private temporary directory, and only documentation address ranges are
//! meant to be configured on the links.

use std::fs;
use std::io;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

pub use crate::netns::Netns;
use crate::netns::{run, unique};
pub use crate::require_root;

/// Polls `f` every `every` until it is true or `limit` passes.
pub fn wait_until(limit: Duration, every: Duration, mut f: impl FnMut() -> bool) -> bool {
    let end = Instant::now() + limit;
    loop {
        if f() {
            return true;
        }
        if Instant::now() >= end {
            return false;
        }
        std::thread::sleep(every);
    }
}

/// A private temporary directory, removed on drop.
#[derive(Debug)]
pub struct TempDir(PathBuf);

impl TempDir {
    /// Creates `$TMPDIR/vc5bb-<pid>-<n>-<tag>`.
    pub fn new(tag: &str) -> io::Result<TempDir> {
        let p = std::env::temp_dir().join(unique(tag));
        fs::create_dir_all(&p)?;
        Ok(TempDir(p))
    }
    /// Creates `PARENT/vc5bb-<pid>-<n>-<tag>`.
    pub fn new_in(parent: &Path, tag: &str) -> io::Result<TempDir> {
        let p = parent.join(unique(tag));
        fs::create_dir_all(&p)?;
        Ok(TempDir(p))
    }

    /// The directory.
    pub fn path(&self) -> &Path {
        &self.0
    }
}

impl Drop for TempDir {
    fn drop(&mut self) {
        let _ = fs::remove_dir_all(&self.0);
    }
}

/// Joins `a` and `b` with a veth pair (created inside `a`, so it never shows
/// in the host's namespace) and configures addresses (`"192.0.2.1/24"`,
/// `"2001:db8::1/64"`; IPv6 without duplicate address detection).
pub fn link(
    a: &Netns,
    a_if: &str,
    a_addrs: &[&str],
    b: &Netns,
    b_if: &str,
    b_addrs: &[&str],
) -> io::Result<()> {
    a.ip(&[
        "link",
        "add",
        a_if,
        "type",
        "veth",
        "peer",
        "name",
        b_if,
        "netns",
        b.name(),
    ])?;
    for (ns, ifname, addrs) in [(a, a_if, a_addrs), (b, b_if, b_addrs)] {
        for addr in addrs {
            if addr.contains(':') {
                ns.ip(&["addr", "add", addr, "dev", ifname, "nodad"])?;
            } else {
                ns.ip(&["addr", "add", addr, "dev", ifname])?;
            }
        }
        ns.ip(&["link", "set", ifname, "up"])?;
    }
    Ok(())
}

/// A child process, terminated (then killed) on drop.
#[derive(Debug)]
pub struct Daemon {
    name: String,
    child: Option<Child>,
    log: PathBuf,
}

impl Daemon {
    /// Spawns `cmd` with stdout/stderr to `log`.
    pub fn spawn(name: &str, mut cmd: Command, log: PathBuf) -> io::Result<Daemon> {
        let out = fs::File::create(&log)?;
        let err = out.try_clone()?;
        let child = cmd.stdin(Stdio::null()).stdout(out).stderr(err).spawn()?;
        Ok(Daemon {
            name: name.to_owned(),
            child: Some(child),
            log,
        })
    }

    /// Its process id.
    pub fn pid(&self) -> Option<u32> {
        self.child.as_ref().map(Child::id)
    }

    /// Whether it is still running.
    pub fn running(&mut self) -> bool {
        self.child
            .as_mut()
            .is_some_and(|c| matches!(c.try_wait(), Ok(None)))
    }

    /// Its log so far.
    pub fn log(&self) -> String {
        fs::read_to_string(&self.log).unwrap_or_default()
    }

    /// SIGKILL, as a crash would.
    pub fn kill(&mut self) {
        if let Some(mut c) = self.child.take() {
            let _ = c.kill();
            let _ = c.wait();
        }
    }

    /// SIGTERM, then SIGKILL after a second.
    pub fn stop(&mut self) {
        if let Some(mut c) = self.child.take() {
            if let Ok(pid) = i32::try_from(c.id()) {
                // SAFETY: kill(2) on our own child's pid.
                unsafe { libc::kill(pid, libc::SIGTERM) };
            }
            let done = wait_until(Duration::from_secs(1), Duration::from_millis(10), || {
                matches!(c.try_wait(), Ok(Some(_)))
            });
            if !done {
                let _ = c.kill();
            }
            let _ = c.wait();
        }
    }
}

impl Drop for Daemon {
    fn drop(&mut self) {
        if self.child.is_some() && std::thread::panicking() {
            eprintln!("--- log of {} ---\n{}", self.name, self.log());
        }
        self.stop();
    }
}

/// A BIRD 2 daemon in a namespace, with private config, socket and pid file.
#[derive(Debug)]
pub struct Bird {
    ns: String,
    dir: PathBuf,
    name: String,
    daemon: Option<Daemon>,
}

impl Bird {
    /// Writes `config` to `DIR/NAME.conf` and starts BIRD in `ns`; returns
    /// once its control socket answers.
    pub fn start(ns: &Netns, dir: &Path, name: &str, config: &str) -> io::Result<Bird> {
        fs::write(dir.join(format!("{name}.conf")), config)?;
        let mut b = Bird {
            ns: ns.name().to_owned(),
            dir: dir.to_owned(),
            name: name.to_owned(),
            daemon: None,
        };
        b.restart()?;
        Ok(b)
    }

    /// The config file.
    pub fn config_path(&self) -> PathBuf {
        self.dir.join(format!("{}.conf", self.name))
    }

    /// The control socket.
    pub fn socket(&self) -> PathBuf {
        self.dir.join(format!("{}.ctl", self.name))
    }

    /// (Re)starts the daemon with the current config file.
    pub fn restart(&mut self) -> io::Result<()> {
        self.stop();
        let _ = fs::remove_file(self.socket());
        let mut cmd = Command::new("ip");
        // Run from the directory with a relative config path, so BIRD's
        // messages ("Reading configuration from NAME.conf", error positions)
        // do not depend on the temporary directory's name.
        cmd.current_dir(&self.dir)
            .args(["netns", "exec", &self.ns, "bird", "-f", "-c"])
            .arg(format!("{}.conf", self.name))
            .arg("-s")
            .arg(self.socket())
            .arg("-P")
            .arg(self.dir.join(format!("{}.pid", self.name)));
        let mut d = Daemon::spawn(&self.name, cmd, self.dir.join(format!("{}.log", self.name)))?;
        let sock = self.socket();
        let up = wait_until(Duration::from_secs(10), Duration::from_millis(20), || {
            // Stop waiting as soon as BIRD exits (e.g. on a config error).
            !d.running() || std::os::unix::net::UnixStream::connect(&sock).is_ok()
        }) && d.running();
        if !up {
            let log = d.log();
            d.kill();
            return Err(io::Error::other(format!(
                "BIRD {} did not start: {log}",
                self.name
            )));
        }
        self.daemon = Some(d);
        Ok(())
    }

    /// Kills BIRD like a crash (SIGKILL); the socket file stays behind.
    pub fn kill(&mut self) {
        if let Some(mut d) = self.daemon.take() {
            d.kill();
        }
    }

    /// Stops BIRD (SIGTERM).
    pub fn stop(&mut self) {
        if let Some(mut d) = self.daemon.take() {
            d.stop();
        }
    }

    /// Whether it runs.
    pub fn running(&mut self) -> bool {
        self.daemon.as_mut().is_some_and(Daemon::running)
    }

    /// `birdc -s SOCKET command`.
    pub fn birdc(&self, command: &str) -> io::Result<String> {
        run(Command::new("birdc")
            .arg("-s")
            .arg(self.socket())
            .arg(command))
    }

    /// Whether `show route PREFIX` lists the prefix (with `via` if given).
    pub fn has_route(&self, prefix: &str, via: Option<&str>) -> bool {
        self.birdc(&format!("show route {prefix}"))
            .is_ok_and(|out| {
                out.contains(prefix) && via.is_none_or(|v| out.contains(&format!("via {v}")))
            })
    }
}

/// FRR's bgpd in a namespace, without zebra, with private paths; queried with
/// `vtysh --vty_socket`.
#[derive(Debug)]
pub struct Frr {
    dir: PathBuf,
    daemon: Daemon,
}

impl Frr {
    /// Starts bgpd with `config` (listening on `listen`).
    pub fn start(ns: &Netns, dir: &Path, config: &str, listen: &str) -> io::Result<Frr> {
        let dir = dir.join("frr");
        fs::create_dir_all(&dir)?;
        let conf = dir.join("bgpd.conf");
        fs::write(&conf, config)?;
        let mut cmd = ns.command("/usr/lib/frr/bgpd");
        cmd.arg("-Z") // no zebra: nothing to install, and no zebra to run
            .arg("-S") // stay root, no capability juggling in the test
            .arg("-f")
            .arg(&conf)
            .arg("-i")
            .arg(dir.join("bgpd.pid"))
            .arg("-z")
            .arg(dir.join("zserv.api"))
            .arg("--vty_socket")
            .arg(&dir)
            .args(["-P", "0", "-l", listen, "--log", "stdout"]);
        let mut daemon = Daemon::spawn("bgpd", cmd, dir.join("bgpd.log"))?;
        let vty = dir.join("bgpd.vty");
        if !wait_until(Duration::from_secs(10), Duration::from_millis(20), || {
            vty.exists()
        }) {
            let log = daemon.log();
            daemon.kill();
            return Err(io::Error::other(format!("bgpd did not start: {log}")));
        }
        Ok(Frr { dir, daemon })
    }

    /// `vtysh -c command`.
    pub fn vtysh(&self, command: &str) -> io::Result<String> {
        run(Command::new("vtysh")
            .arg("--vty_socket")
            .arg(&self.dir)
            .args(["-c", command]))
    }

    /// bgpd's log.
    pub fn log(&self) -> String {
        self.daemon.log()
    }
}

/// gobgpd in a namespace, its API on a private unix socket.
#[derive(Debug)]
pub struct Gobgp {
    sock: PathBuf,
    daemon: Daemon,
}

impl Gobgp {
    /// Starts gobgpd with the TOML `config`.
    pub fn start(ns: &Netns, dir: &Path, config: &str) -> io::Result<Gobgp> {
        let conf = dir.join("gobgpd.toml");
        fs::write(&conf, config)?;
        let sock = dir.join("gobgp.sock");
        let mut cmd = ns.command("gobgpd");
        cmd.arg("-f")
            .arg(&conf)
            .arg(format!("--api-hosts=unix://{}", sock.display()))
            .args(["--pprof-disable", "-p"]);
        let mut daemon = Daemon::spawn("gobgpd", cmd, dir.join("gobgpd.log"))?;
        let ready = wait_until(Duration::from_secs(10), Duration::from_millis(50), || {
            gobgp_cli(&sock, &["global"]).is_ok()
        });
        if !ready {
            let log = daemon.log();
            daemon.kill();
            return Err(io::Error::other(format!("gobgpd did not start: {log}")));
        }
        Ok(Gobgp { sock, daemon })
    }

    /// `gobgp --target unix://SOCK args…`.
    pub fn gobgp(&self, args: &[&str]) -> io::Result<String> {
        gobgp_cli(&self.sock, args)
    }

    /// gobgpd's log.
    pub fn log(&self) -> String {
        self.daemon.log()
    }
}

fn gobgp_cli(sock: &Path, args: &[&str]) -> io::Result<String> {
    run(Command::new("gobgp")
        .arg("--target")
        .arg(format!("unix://{}", sock.display()))
        .args(args))
}
