//! Two load balancers joined by a link, each with its own data plane and
//! `vc5-flowsync`: the set-up shared by the flow-sync integration tests
//! (`vc5-xdp/tests/flowsync.rs`) and `vc5-flowsync-bench`, so both run the same
//! thing. Needs root (BPF, namespaces, mounts).
//!
//! Each "LB" ([`Lb`]) is a [`DataPlane`] on its own private bpffs under
//! /tmp (`ip netns exec` remounts /sys, hiding /sys/fs/bpf) and a
//! `vc5-flowsync` ([`Proc`]) started inside its own network namespace
//! ([`Netns`]); the two namespaces are joined by a veth pair ([`Pair`]).
//! Flows are created in LB A by running its XDP program with
//! BPF_PROG_TEST_RUN; what LB B learns is read from B's pinned peer tables
//! and `sync_status`.
//!
//! This is a harness: a failed set-up step panics with what failed.
//! Everything it creates (namespaces, the veth, bpffs mounts, temporary
//! directories, processes) is removed on drop. The path of the
//! `vc5-flowsync` binary is a parameter: tests pass
//! `env!("CARGO_BIN_EXE_vc5-flowsync")`, the benchmark the one beside it.
//! `VC5_TEST_LOG` sets the processes' `RUST_LOG` (default `info`).

use std::net::IpAddr;
use std::os::unix::fs::PermissionsExt;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Mutex, MutexGuard};
use std::time::{Duration, Instant};

use aya::programs::{TestRun, TestRunOptions};

use vc5_xdp::dataplane::{TCP, VC5_OBJ};
use vc5_xdp::flowsync::engine::FlowMap;
use vc5_xdp::flowsync::keys::{Key, Keyring};
use vc5_xdp::flowsync::pinned::Pinned;
use vc5_xdp::maps::{Flow4, SYNC_SYNCED, SyncStatus};
use vc5_xdp::{DataPlane, L2, MapSizes, RealMode, RealSpec, ServiceSpec};

use crate::require_root;
use crate::xdp::TempBpffs;

/// The service both LBs serve (port 80, TCP).
pub const VIP: &str = "192.0.2.80";
pub const VIP6: &str = "2001:db8:80::80";
/// A service only B has, programmed first so that B's indexes differ from A's.
pub const OTHER_VIP: &str = "192.0.2.90";
pub const REALS: [&str; 3] = ["203.0.113.11", "203.0.113.12", "203.0.113.13"];
/// A real tests give A, unknown to B.
pub const EXTRA_REAL: &str = "203.0.113.14";
/// B's fourth real, unknown to A: B's table differs from A's, so some of
/// A's flows sit in buckets whose real at B is another.
pub const B_REAL: &str = "203.0.113.15";
pub const GROUP: &str = "239.255.70.1:9999";
pub const GROUP6: &str = "[ff05::7c5]:9999";
/// The flow-sync key both LBs use (id 0).
pub const KEY_HEX: &str = "00112233445566778899aabbccddeeff00112233445566778899aabbccddeeff";
/// The verdict of a frame the program forwards.
pub const XDP_TX: u32 = 3;

/// Namespace set-ups run one at a time in a process: timings mean more
/// on two cores, and the fixed addresses would clash otherwise.
pub static SERIAL: Mutex<()> = Mutex::new(());
static N: AtomicUsize = AtomicUsize::new(0);

pub fn ip(s: &str) -> IpAddr {
    s.parse().expect("an IP address")
}

/// Runs a command; panics with its stderr when it fails.
pub fn sh(args: &[&str]) {
    let out = Command::new(args[0])
        .args(&args[1..])
        .output()
        .unwrap_or_else(|e| panic!("{args:?}: {e}"));
    assert!(
        out.status.success(),
        "{args:?}: {}",
        String::from_utf8_lossy(&out.stderr)
    );
}

/// [`KEY_HEX`] as a keyring (id 0).
pub fn keyring() -> Keyring {
    let mut k = [0u8; 32];
    for (i, b) in k.iter_mut().enumerate() {
        *b = u8::from_str_radix(&KEY_HEX[2 * i..2 * i + 2], 16).expect("hex");
    }
    Keyring::new(vec![(0, Key::new(k))]).expect("one key")
}

/// Writes a key file holding [`KEY_HEX`] as id 0, readable by its owner only.
pub fn write_key(path: &Path) {
    std::fs::write(path, format!("# test key\n0 {KEY_HEX}\n")).expect("write the key file");
    std::fs::set_permissions(path, std::fs::Permissions::from_mode(0o600))
        .expect("chmod the key file");
}

/// A suffix unique in this process and (mostly) among processes, for names
/// of namespaces and interfaces (which must stay short: IFNAMSIZ).
pub fn unique() -> String {
    format!(
        "{}{}",
        std::process::id() % 100_000,
        N.fetch_add(1, Ordering::Relaxed)
    )
}

/// A fresh directory under the temporary directory, removed on drop.
#[derive(Debug)]
pub struct TempDir(PathBuf);

impl TempDir {
    pub fn new() -> Self {
        let dir = std::env::temp_dir().join(format!("vc5-testbed-{}", unique()));
        let _ = std::fs::remove_dir_all(&dir);
        std::fs::create_dir_all(&dir).expect("create a temporary directory");
        TempDir(dir)
    }

    pub fn path(&self) -> &Path {
        &self.0
    }
}

impl Default for TempDir {
    fn default() -> Self {
        Self::new()
    }
}

impl Drop for TempDir {
    fn drop(&mut self) {
        let _ = std::fs::remove_dir_all(&self.0);
    }
}

pub use crate::netns::Netns;

/// A vc5-flowsync process, stopped (SIGTERM, then SIGKILL) on drop; its
/// stderr goes to `log`.
#[derive(Debug)]
pub struct Proc {
    pub child: Option<Child>,
    pub log: PathBuf,
}

impl Proc {
    /// Starts `bin` (vc5-flowsync) inside namespace `ns` with `--config cfg
    /// --interface ifname --address addr --bpffs bpffs`, logging to `log`
    /// at `RUST_LOG` = `VC5_TEST_LOG` (default `info`). `ip netns exec`
    /// execs the binary, so the child's pid is vc5-flowsync's.
    pub fn spawn(
        bin: &Path,
        ns: &str,
        cfg: &Path,
        ifname: &str,
        addr: IpAddr,
        bpffs: &Path,
        log: PathBuf,
    ) -> Proc {
        let child = Command::new("ip")
            .args(["netns", "exec", ns])
            .arg(bin)
            .arg("--config")
            .arg(cfg)
            .args(["--interface", ifname, "--address"])
            .arg(addr.to_string())
            .arg("--bpffs")
            .arg(bpffs)
            .env(
                "RUST_LOG",
                std::env::var("VC5_TEST_LOG").unwrap_or("info".into()),
            )
            .stdout(Stdio::null())
            .stderr(std::fs::File::create(&log).expect("create the log file"))
            .spawn()
            .unwrap_or_else(|e| panic!("start {}: {e}", bin.display()));
        Proc {
            child: Some(child),
            log,
        }
    }

    pub fn pid(&self) -> u32 {
        self.child.as_ref().expect("running").id()
    }

    /// User + system CPU seconds so far, from /proc.
    pub fn cpu_seconds(&self) -> f64 {
        let (u, s) = self.cpu_split();
        u + s
    }

    /// User and system CPU seconds so far (fields 14 and 15 of
    /// /proc/PID/stat, the 12th and 13th after the command's parenthesis).
    pub fn cpu_split(&self) -> (f64, f64) {
        let stat =
            std::fs::read_to_string(format!("/proc/{}/stat", self.pid())).unwrap_or_default();
        let rest = stat.rsplit_once(')').map(|x| x.1).unwrap_or("");
        let f: Vec<&str> = rest.split_whitespace().collect();
        let ticks = |i: usize| f.get(i).and_then(|v| v.parse::<f64>().ok()).unwrap_or(0.0);
        // SAFETY: sysconf has no preconditions.
        let hz = unsafe { libc::sysconf(libc::_SC_CLK_TCK) } as f64;
        (ticks(11) / hz, ticks(12) / hz)
    }

    /// SIGTERM and wait (SIGKILL after 5 s); returns the exit code.
    pub fn stop(&mut self) -> Option<i32> {
        let mut c = self.child.take()?;
        // SAFETY: signalling our own child.
        unsafe { libc::kill(c.id() as i32, libc::SIGTERM) };
        let deadline = Instant::now() + Duration::from_secs(5);
        loop {
            if let Ok(Some(st)) = c.try_wait() {
                return st.code();
            }
            if Instant::now() > deadline {
                let _ = c.kill();
                let _ = c.wait();
                return None;
            }
            std::thread::sleep(Duration::from_millis(10));
        }
    }

    /// What it logged so far.
    pub fn log(&self) -> String {
        std::fs::read_to_string(&self.log).unwrap_or_default()
    }
}

impl Drop for Proc {
    fn drop(&mut self) {
        self.stop();
    }
}

/// Reals serving in L2 mode, with made-up MACs (02:bb:0:0:0:i+1).
pub fn reals(addrs: &[&str]) -> Vec<RealSpec> {
    addrs
        .iter()
        .enumerate()
        .map(|(i, a)| RealSpec {
            addr: ip(a),
            weight: 1,
            mode: RealMode::Serve,
            l2: Some(L2 {
                mac: [0x02, 0xbb, 0, 0, 0, i as u8 + 1],
                src_mac: [0x02, 0xaa, 0, 0, 0, 1],
                ifindex: 0,
                ..L2::default()
            }),
        })
        .collect()
}

/// One load balancer: its data plane and (when started) its vc5-flowsync.
/// Fields drop in order: the process first, the bpffs last.
pub struct Lb {
    pub proc: Option<Proc>,
    pub dp: DataPlane,
    pub specs: Vec<ServiceSpec>,
    /// Holds the config and key file (`vc5.yaml`, `flowsync.key`) and logs.
    pub dir: TempDir,
    pub ns: String,
    pub ifname: String,
    pub addr: IpAddr,
    pub group: &'static str,
    pub bin: PathBuf,
    pub fs: TempBpffs,
}

impl Lb {
    pub fn bpffs(&self) -> PathBuf {
        self.fs.path().join("vc5")
    }

    pub fn pinned(&self) -> Pinned {
        Pinned::open(&self.bpffs()).expect("open the pinned maps")
    }

    /// Writes the key file and a config naming it and the group, plus
    /// `extra` (YAML lines, each ending in a newline).
    pub fn write_config(&self, extra: &str) -> PathBuf {
        write_key(&self.dir.path().join("flowsync.key"));
        let cfg = self.dir.path().join("vc5.yaml");
        std::fs::write(
            &cfg,
            format!(
                "multicast: \"{}\"\nflow_sync_key: flowsync.key\n{extra}services: []\n",
                self.group
            ),
        )
        .expect("write the config");
        cfg
    }

    /// Starts this LB's vc5-flowsync with the config plus `extra`.
    pub fn start(&mut self, extra: &str) {
        let cfg = self.write_config(extra);
        let log = self.dir.path().join(format!(
            "flowsync-{}.log",
            N.fetch_add(1, Ordering::Relaxed)
        ));
        self.proc = Some(Proc::spawn(
            &self.bin,
            &self.ns,
            &cfg,
            &self.ifname,
            self.addr,
            &self.bpffs(),
            log,
        ));
    }

    /// `sync_status`: this host's entry and the peers' in use.
    pub fn status(&self) -> (SyncStatus, Vec<SyncStatus>) {
        self.dp.sync_status().expect("sync_status")
    }

    /// Runs one frame through the program; the verdict.
    pub fn run(&mut self, frame: &[u8]) -> u32 {
        self.run_out(frame).0
    }

    /// Runs one frame; the verdict and the frame as it leaves.
    pub fn run_out(&mut self, frame: &[u8]) -> (u32, Vec<u8>) {
        let mut out = vec![0u8; frame.len() + 64];
        let prog = self.dp.xdp().expect("the XDP program");
        let mut opts = TestRunOptions::new();
        opts.data_in = Some(frame);
        opts.data_out = Some(&mut out);
        let r = prog.test_run(opts).expect("BPF_PROG_TEST_RUN");
        out.truncate(r.data_size_out as usize);
        (r.return_value, out)
    }

    /// The MAC this LB sends a real of VIP:80 to.
    pub fn mac_of(&self, real: IpAddr) -> [u8; 6] {
        let spec = self
            .specs
            .iter()
            .find(|s| s.vip == ip(VIP) && s.port == 80)
            .expect("VIP:80 served");
        spec.reals
            .iter()
            .find(|r| r.addr == real)
            .expect("a real of VIP:80")
            .l2
            .expect("L2 mode")
            .mac
    }

    /// The real a local flow of VIP:80 is pinned to, by its address.
    pub fn real_of_flow(&self, key: &Flow4) -> Option<IpAddr> {
        let b = self.dp.flow4(true, key)?;
        let spec = self
            .specs
            .iter()
            .find(|s| s.vip == ip(VIP) && s.port == 80)?;
        spec.reals
            .iter()
            .find(|r| self.dp.backend_index(ip(VIP), 80, TCP, r.addr) == Some(b as u16))
            .map(|r| r.addr)
    }

    /// Waits until this LB's vc5-flowsync reports SYNCED; panics with its
    /// status and log after `within`.
    pub fn wait_synced(&self, within: Duration) {
        let deadline = Instant::now() + within;
        while self.status().0.state != SYNC_SYNCED {
            assert!(
                Instant::now() < deadline,
                "not SYNCED within {within:?}: {:?}\nlog:\n{}",
                self.status().0,
                self.proc.as_ref().map(|p| p.log()).unwrap_or_default()
            );
            std::thread::sleep(Duration::from_millis(20));
        }
    }
}

/// The map sizes the tests use: room for the resync test's 100,000 flows.
pub fn test_sizes() -> MapSizes {
    MapSizes {
        flows_tcp4: 1 << 19,
        ..MapSizes::small()
    }
}

/// How to build a [`Pair`].
#[derive(Debug, Clone)]
pub struct PairConfig {
    /// The vc5-flowsync binary.
    pub bin: PathBuf,
    /// A's reals of VIP:80 and VIP6:80.
    pub a_reals: Vec<String>,
    /// IPv6 group and addresses (else IPv4).
    pub v6: bool,
    pub sizes: MapSizes,
    /// The BPF object both data planes load (e.g. `VC5_BENCH_OBJ`).
    pub object: &'static [u8],
}

impl PairConfig {
    /// IPv4, [`test_sizes`], the production program.
    pub fn new(bin: impl Into<PathBuf>, a_reals: &[&str]) -> Self {
        PairConfig {
            bin: bin.into(),
            a_reals: a_reals.iter().map(|s| s.to_string()).collect(),
            v6: false,
            sizes: test_sizes(),
            object: VC5_OBJ,
        }
    }
}

/// Two LBs in two namespaces joined by a veth pair: A at 198.18.0.1 (also
/// 198.18.0.3, free for a third sender) / fd00:198:18::1, B at 198.18.0.2
/// / fd00:198:18::2. Holds [`SERIAL`] while it lives.
pub struct Pair {
    pub a: Lb,
    pub b: Lb,
    pub na: Netns,
    pub nb: Netns,
    _serial: MutexGuard<'static, ()>,
}

impl Pair {
    /// A serves VIP:80 with `a_reals`; B serves another service first (so
    /// its backend indexes differ from A's) and VIP:80 with REALS reversed
    /// plus B_REAL. IPv4 group and addresses.
    pub fn new(bin: &str, a_reals: &[&str]) -> Pair {
        Pair::build(&PairConfig::new(bin, a_reals))
    }

    /// [`Pair::new`] over IPv6 (group, addresses; VIP6 served too) or IPv4.
    pub fn with(bin: &str, a_reals: &[&str], v6: bool) -> Pair {
        Pair::build(&PairConfig {
            v6,
            ..PairConfig::new(bin, a_reals)
        })
    }

    pub fn build(c: &PairConfig) -> Pair {
        require_root();
        let serial = SERIAL.lock().unwrap_or_else(|e| e.into_inner());
        let u = unique();
        let na = Netns::new("vc5fsa").expect("a namespace");
        let nb = Netns::new("vc5fsb").expect("a namespace");
        let (ia, ib) = (format!("vfa{u}"), format!("vfb{u}"));
        sh(&[
            "ip", "link", "add", &ia, "type", "veth", "peer", "name", &ib,
        ]);
        sh(&["ip", "link", "set", &ia, "netns", na.name()]);
        sh(&["ip", "link", "set", &ib, "netns", nb.name()]);
        na.exec(&["ip", "addr", "add", "198.18.0.1/24", "dev", &ia])
            .unwrap();
        na.exec(&["ip", "addr", "add", "198.18.0.3/24", "dev", &ia])
            .unwrap();
        nb.exec(&["ip", "addr", "add", "198.18.0.2/24", "dev", &ib])
            .unwrap();
        // No duplicate address detection: the addresses are usable at once.
        let v6a = [
            "ip",
            "addr",
            "add",
            "fd00:198:18::1/64",
            "dev",
            &ia,
            "nodad",
        ];
        na.exec(&v6a).unwrap();
        let v6b = [
            "ip",
            "addr",
            "add",
            "fd00:198:18::2/64",
            "dev",
            &ib,
            "nodad",
        ];
        nb.exec(&v6b).unwrap();
        na.exec(&["ip", "link", "set", &ia, "up"]).unwrap();
        nb.exec(&["ip", "link", "set", &ib, "up"]).unwrap();
        let group = if c.v6 { GROUP6 } else { GROUP };
        let lb = |ns: &Netns, ifname: String, addr: &str, specs: Vec<ServiceSpec>| {
            let fs = TempBpffs::new().expect("mount a private bpffs");
            let mut dp = DataPlane::open_object(&fs.path().join("vc5"), c.sizes, c.object)
                .expect("load vc5");
            // No insert bound: the clock stands still here, and the
            // benchmark inserts a million flows in one tick.
            dp.set_insert_limit(0).expect("insert limit");
            dp.program(&specs).expect("program");
            Lb {
                proc: None,
                dp,
                specs,
                dir: TempDir::new(),
                ns: ns.name().to_string(),
                ifname,
                addr: ip(addr),
                group,
                bin: c.bin.clone(),
                fs,
            }
        };
        let a_reals: Vec<&str> = c.a_reals.iter().map(String::as_str).collect();
        let svc = |vip: &str, port: u16, r: &[&str]| ServiceSpec {
            vip: ip(vip),
            port,
            proto: TCP,
            forward: vc5_xdp::Forward::L2,
            reals: reals(r),
        };
        let a_specs = vec![svc(VIP, 80, &a_reals), svc(VIP6, 80, &a_reals)];
        let mut reversed = REALS.to_vec();
        reversed.reverse();
        reversed.push(B_REAL);
        let b_specs = vec![
            svc(OTHER_VIP, 443, &REALS),
            svc(VIP, 80, &reversed),
            svc(VIP6, 80, &reversed),
        ];
        let (aa, ba) = if c.v6 {
            ("fd00:198:18::1", "fd00:198:18::2")
        } else {
            ("198.18.0.1", "198.18.0.2")
        };
        let a = lb(&na, ia, aa, a_specs);
        let b = lb(&nb, ib, ba, b_specs);
        Pair {
            a,
            b,
            na,
            nb,
            _serial: serial,
        }
    }
}

/// B's entry for the peer at `addr` in `lb`'s `sync_status`.
pub fn peer_by_addr(lb: &Lb, addr: IpAddr) -> Option<SyncStatus> {
    lb.status()
        .1
        .into_iter()
        .find(|p| p.addr == vc5_xdp::maps::addr16(addr))
}

/// Entries of the IPv4 TCP peer table (where VIP:80's flows go).
pub fn count_peer(p: &Pinned) -> usize {
    p.all_flows(true, FlowMap::Tcp4)
        .expect("read a peer table")
        .len()
}

/// Polls `f` every 20 ms; panics naming `what` after `within`.
pub fn wait_for(what: &str, within: Duration, mut f: impl FnMut() -> bool) {
    let deadline = Instant::now() + within;
    while !f() {
        assert!(Instant::now() < deadline, "timed out waiting for {what}");
        std::thread::sleep(Duration::from_millis(20));
    }
}

/// The `q` quantile (0..=1) of sorted, non-empty samples (nearest rank).
pub fn percentile<T: Copy>(sorted: &[T], q: f64) -> T {
    sorted[((sorted.len() - 1) as f64 * q).round() as usize]
}
