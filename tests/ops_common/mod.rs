//! Shared by the ops_* tests: a synthetic [`Status`], a control-loop
//! stand-in that owns it and answers [`Command`]s, and helpers to run
//! a private dbus-daemon and tools as another user.
#![allow(dead_code)] // each test binary uses a different part

pub mod browser;

use std::collections::{BTreeMap, VecDeque};
use std::io::{BufRead, BufReader};
use std::net::IpAddr;
use std::path::{Path, PathBuf};
use std::process::{Child, Command as Process, Output, Stdio};
use std::sync::{Arc, Mutex};
use std::time::{Duration, SystemTime, UNIX_EPOCH};
use tokio::sync::{broadcast, mpsc, watch};
use vc5::status::*;

pub fn now_ms() -> u64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map(|d| d.as_millis() as u64)
        .unwrap_or(0)
}

fn ip(s: &str) -> Option<IpAddr> {
    Some(s.parse().expect("test address"))
}

fn check(name: &str, passing: bool, reason: &str, latency_ms: f64) -> CheckStatus {
    CheckStatus {
        name: name.into(),
        passing,
        reason: reason.into(),
        latency_ms,
        at_ms: now_ms(),
        ..CheckStatus::default()
    }
}

fn real(addr: &str, healthy: bool, reason: &str, n: u64) -> RealStatus {
    RealStatus {
        addr: ip(addr),
        state: if healthy { "serving" } else { "failed" }.into(),
        healthy,
        drained: false,
        disabled: false,
        weight: 100,
        forward: "l2".into(),
        next_hop: ip(addr),
        mac: Some("02:00:00:00:00:0a".into()),
        vlan: None,
        reason: if healthy {
            String::new()
        } else {
            reason.into()
        },
        checks: vec![check("http:80", healthy, reason, 1.25)],
        counters: FlowCounters {
            packets: 1000 * n,
            bytes: 100_000 * n,
            new_flows: 10 * n,
        },
    }
}

/// Two configuration services: `nginx` on two ports of one IPv4 VIP (one
/// real healthy, one failing) and `dns` on an IPv6 VIP over UDP. Addresses
/// are from the documentation ranges; nothing is ever sent to them.
pub fn synthetic_status() -> Status {
    let nginx = |port: u16, k: u64| ServiceStatus {
        name: "nginx".into(),
        desc: "web server".into(),
        vip: ip("192.0.2.1"),
        port,
        protocol: "tcp".into(),
        forward: "l2".into(),
        tunnel_port: None,
        state: "up".into(),
        need: 1,
        healthy: 1,
        total: 2,
        counters: FlowCounters {
            packets: 5000 * k,
            bytes: 500_000 * k,
            new_flows: 50 * k,
        },
        dropped: Counter {
            packets: 3 * k,
            bytes: 180 * k,
        },
        reals: vec![
            real("198.51.100.10", true, "", 3 * k),
            real("198.51.100.11", false, "HTTP 503", 2 * k),
        ],
    };
    let dns = ServiceStatus {
        name: "dns".into(),
        desc: "resolver".into(),
        vip: ip("2001:db8::53"),
        port: 53,
        protocol: "udp".into(),
        forward: "gue".into(),
        tunnel_port: Some(6080),
        state: "up".into(),
        need: 1,
        healthy: 2,
        total: 2,
        counters: FlowCounters {
            packets: 700,
            bytes: 70_000,
            new_flows: 70,
        },
        dropped: Counter::default(),
        // Tunnelled to reals in another subnet, through its gateway.
        reals: [
            real("2001:db8:1::10", true, "", 4),
            real("2001:db8:1::11", true, "", 3),
        ]
        .map(|r| RealStatus {
            forward: "gue".into(),
            next_hop: ip("2001:db8::1"),
            mac: Some("02:00:00:00:00:01".into()),
            vlan: Some(20),
            ..r
        })
        .into(),
    };
    let mut global = BTreeMap::new();
    global.insert(
        "tx".to_string(),
        Counter {
            packets: 13_700,
            bytes: 1_370_000,
        },
    );
    global.insert(
        "pass_not_vip".to_string(),
        Counter {
            packets: 420,
            bytes: 42_000,
        },
    );
    global.insert(
        "drop_fragment".to_string(),
        Counter {
            packets: 2,
            bytes: 3000,
        },
    );
    let mut events = VecDeque::new();
    events.push_back(LogEvent {
        at_ms: now_ms() - 5000,
        level: "info".into(),
        message: "vc5d started".into(),
    });
    events.push_back(LogEvent {
        at_ms: now_ms() - 1000,
        level: "warn".into(),
        message: "real 198.51.100.11 of nginx failed: HTTP 503".into(),
    });
    Status {
        version: "0.1.0-test".into(),
        at_ms: now_ms(),
        started_ms: now_ms() - 3_600_000,
        ready_ms: Some(now_ms() - 3_590_000),
        reloads: vc5::status::ReloadStatus {
            done: 3,
            refused: 1,
            last: Some(vc5::status::LastReload {
                at_ms: now_ms() - 60_000,
                ok: false,
                error: Some("line 3: unknown key".into()),
            }),
        },
        config: "/etc/vc5/vc5.yaml".into(),
        interfaces: vec![InterfaceStatus {
            name: "eth0".into(),
            mode: "native".into(),
        }],
        services: vec![nginx(80, 2), nginx(443, 1), dns],
        vips: vec![
            VipStatus {
                vip: ip("192.0.2.1"),
                announceable: true,
                announced: true,
            },
            VipStatus {
                vip: ip("2001:db8::53"),
                announceable: true,
                announced: false,
            },
        ],
        rhi: RhiStatus {
            mode: "bird".into(),
            sessions: vec![SessionStatus {
                peer: "bird".into(),
                state: "up".into(),
                last_error: String::new(),
                up: true,
            }],
        },
        global,
        probes: BTreeMap::new(),
        events,
        local_trouble: None,
        flow_sync: synthetic_flow_sync(),
        flow_table: FlowTableStatus {
            insert_limit: 100_000,
            inserts_refused: 7,
            evicted: 3,
            refused_full: 2,
        },
    }
}

/// Flow sync configured, announcements held, this host's vc5-flowsync
/// resyncing, and two peers (one IPv4 with rejects, one IPv6).
pub fn synthetic_flow_sync() -> FlowSyncStatus {
    let reasons = |auth: u64| {
        ["short", "auth", "duplicate", "old_epoch"]
            .iter()
            .map(|r| (r.to_string(), if *r == "auth" { auth } else { 0 }))
            .collect::<BTreeMap<_, _>>()
    };
    let peer = |addr: &str, k: u64| FlowSyncPeer {
        addr: ip(addr),
        sender: format!("c0a8000{k}"),
        epoch: 1_800_000_000_000_000_000 + k,
        datagrams: 100 * k,
        records: 5_000 * k,
        written: 4_900 * k,
        gaps: k,
        unknown_real: 10 * k,
        rate_limited: 2 * k,
        rejects: reasons(3 * k),
        last_heard_ms: now_ms() - 300 * k,
        last_heard_ago_ms: 300 * k,
        delay_p50_us: 150 * k,
        delay_p99_us: 1_500 * k,
        delay_max_us: 9_000 * k,
    };
    FlowSyncStatus {
        configured: true,
        group: Some("224.0.0.1:9999".into()),
        wait_ms: 10_000,
        holding_announcements: true,
        holding_until_ms: now_ms() + 7_000,
        local: FlowSyncLocal {
            running: true,
            state: "resyncing".into(),
            sender: "c0a80001".into(),
            epoch: 1_800_000_000_000_000_000,
            addr: ip("192.0.2.250"),
            started_ms: now_ms() - 3_000,
            heartbeat_ms: now_ms() - 100,
            sent_datagrams: 77,
            sent_records: 7_777,
            lost_events: 4,
            rejects: reasons(1),
        },
        peers: vec![peer("192.0.2.251", 1), peer("2001:db8::251", 2)],
    }
}

/// A stand-in for the control loop: owns a [`Status`], applies Drain and
/// Undrain to it the way vc5d does, publishes each change and logs it.
pub struct StandIn {
    pub status: Arc<Mutex<Status>>,
    pub tx: watch::Sender<Arc<Status>>,
    pub events: broadcast::Sender<Event>,
    /// What the next Reload answers.
    pub reload: Arc<Mutex<Result<(), CommandError>>>,
    task: tokio::task::JoinHandle<()>,
}

impl StandIn {
    /// Starts the stand-in; the returned [`Shared`] is what a front end gets.
    pub fn start(status: Status) -> (StandIn, Shared) {
        let (tx, rx) = watch::channel(Arc::new(status.clone()));
        let (events, _) = broadcast::channel(64);
        let (cmd_tx, mut cmd_rx) = mpsc::channel::<Command>(8);
        let status = Arc::new(Mutex::new(status));
        let reload = Arc::new(Mutex::new(Ok(())));
        let task = {
            let status = status.clone();
            let tx = tx.clone();
            let reload = reload.clone();
            tokio::spawn(async move {
                while let Some(cmd) = cmd_rx.recv().await {
                    match cmd {
                        Command::Drain {
                            service,
                            real,
                            reply,
                        } => {
                            let r = apply(&status, &tx, &service, &real, true);
                            let _ = reply.send(r);
                        }
                        Command::Undrain {
                            service,
                            real,
                            reply,
                        } => {
                            let r = apply(&status, &tx, &service, &real, false);
                            let _ = reply.send(r);
                        }
                        Command::Reload { reply } => {
                            let _ = reply.send(reload.lock().unwrap().clone());
                        }
                    }
                }
            })
        };
        let shared = Shared {
            status: rx,
            events: events.clone(),
            commands: cmd_tx,
        };
        (
            StandIn {
                status,
                tx,
                events,
                reload,
                task,
            },
            shared,
        )
    }

    /// Changes the status and publishes it, as the control loop does.
    pub fn update(&self, f: impl FnOnce(&mut Status)) {
        let mut s = self.status.lock().unwrap();
        f(&mut s);
        s.at_ms = now_ms();
        self.tx.send_replace(Arc::new(s.clone()));
    }

    /// Stops answering commands, as a stopping vc5d does; returns once the
    /// command loop is gone (its channel closed).
    pub async fn stop_commands(&self) {
        self.task.abort();
        let t = std::time::Instant::now();
        while !self.task.is_finished() {
            assert!(
                t.elapsed() < Duration::from_secs(5),
                "the command loop lives on"
            );
            tokio::time::sleep(Duration::from_millis(1)).await;
        }
    }

    pub fn real(&self, service: &str, addr: &str) -> RealStatus {
        let addr: IpAddr = addr.parse().unwrap();
        let s = self.status.lock().unwrap();
        s.services
            .iter()
            .filter(|s| s.name == service)
            .flat_map(|s| &s.reals)
            .find(|r| r.addr == Some(addr))
            .cloned()
            .expect("real in status")
    }
}

impl Drop for StandIn {
    fn drop(&mut self) {
        self.task.abort();
    }
}

fn apply(
    status: &Mutex<Status>,
    tx: &watch::Sender<Arc<Status>>,
    service: &str,
    real: &str,
    drain: bool,
) -> Result<(), CommandError> {
    let mut s = status.lock().unwrap();
    if !s.services.iter().any(|e| e.name == service) {
        return Err(CommandError::UnknownService(service.into()));
    }
    let unknown = || CommandError::UnknownReal {
        service: service.into(),
        real: real.into(),
    };
    let addr: IpAddr = real.parse().map_err(|_| unknown())?;
    let reals: Vec<&mut RealStatus> = s
        .services
        .iter_mut()
        .filter(|e| e.name == service)
        .flat_map(|e| e.reals.iter_mut())
        .filter(|r| r.addr == Some(addr))
        .collect();
    if reals.is_empty() {
        return Err(unknown());
    }
    let drained = reals.iter().any(|r| r.drained);
    if drain && drained {
        return Err(CommandError::AlreadyDrained {
            service: service.into(),
            real: real.into(),
        });
    }
    if !drain && !drained {
        return Err(CommandError::NotDrained {
            service: service.into(),
            real: real.into(),
        });
    }
    for r in reals {
        r.drained = drain;
        r.state = if drain {
            "drained"
        } else if r.healthy {
            "serving"
        } else {
            "failed"
        }
        .into();
    }
    let what = if drain { "drained" } else { "undrained" };
    s.events.push_back(LogEvent {
        at_ms: now_ms(),
        level: "info".into(),
        message: format!("real {real} of {service} {what}"),
    });
    s.at_ms = now_ms();
    tx.send_replace(Arc::new(s.clone()));
    Ok(())
}

/// The repository's root (the tests run with the package root as cwd in
/// the workspace; the scratch crate points at the real files).
pub fn repo() -> PathBuf {
    let here = Path::new(env!("CARGO_MANIFEST_DIR"));
    if here.join("dbus/org.vc5.Balancer1.conf").exists() {
        here.to_path_buf()
    } else {
        PathBuf::from("/work/main")
    }
}

/// A private dbus-daemon listening in a temporary directory.
pub struct TestBus {
    pub dir: tempfile::TempDir,
    pub address: String,
    child: Child,
}

/// The socket's address without the bus's guid, which changes when the bus
/// restarts: what a client that reconnects across a restart is given.
fn plain_address(address: &str) -> String {
    address
        .split(",guid=")
        .next()
        .unwrap_or(address)
        .to_string()
}

/// The default policy of Debian's system bus (`/usr/share/dbus-1/system.conf`):
/// anyone may connect, nobody may own names or call methods unless a
/// policy file says so.
const SYSTEM_LIKE_POLICY: &str = r#"
  <policy context="default">
    <allow user="*"/>
    <deny own="*"/>
    <deny send_type="method_call"/>
    <allow send_type="signal"/>
    <allow send_requested_reply="true" send_type="method_return"/>
    <allow send_requested_reply="true" send_type="error"/>
    <allow receive_type="method_call"/>
    <allow receive_type="method_return"/>
    <allow receive_type="error"/>
    <allow receive_type="signal"/>
    <allow send_destination="org.freedesktop.DBus" send_interface="org.freedesktop.DBus"/>
    <allow send_destination="org.freedesktop.DBus" send_interface="org.freedesktop.DBus.Introspectable"/>
    <allow send_destination="org.freedesktop.DBus" send_interface="org.freedesktop.DBus.Properties"/>
  </policy>
  <policy user="root">
    <allow send_destination="org.freedesktop.DBus" send_interface="org.freedesktop.DBus.Monitoring"/>
  </policy>
"#;

/// Which bus policy a [`TestBus`] enforces.
pub enum Policy {
    /// A system-like bus with `dbus/org.vc5.Balancer1.conf` included.
    Strict,
    /// The same with a later local rule that lets anyone call anything on
    /// vc5d (a stale or careless local policy), so that only vc5d's own
    /// uid check stands between an unprivileged user and a state change.
    Permissive,
}

impl TestBus {
    pub fn start(policy: Policy) -> TestBus {
        let dir = tempfile::Builder::new()
            .prefix("vc5-dbus-")
            .tempdir()
            .unwrap();
        // The unprivileged test user must reach the socket.
        std::fs::set_permissions(
            dir.path(),
            std::os::unix::fs::PermissionsExt::from_mode(0o755),
        )
        .unwrap();
        let socket = dir.path().join("bus");
        let include = repo().join("dbus/org.vc5.Balancer1.conf");
        let local = match policy {
            Policy::Strict => "",
            Policy::Permissive => {
                r#"<policy context="default"><allow send_destination="org.vc5.Balancer1"/></policy>"#
            }
        };
        let config = format!(
            r#"<!DOCTYPE busconfig PUBLIC "-//freedesktop//DTD D-Bus Bus Configuration 1.0//EN"
 "http://www.freedesktop.org/standards/dbus/1.0/busconfig.dtd">
<busconfig>
  <type>custom</type>
  <listen>unix:path={socket}</listen>
  <auth>EXTERNAL</auth>
  {SYSTEM_LIKE_POLICY}
  <include>{include}</include>
  {local}
</busconfig>
"#,
            socket = socket.display(),
            include = include.display(),
        );
        let conf = dir.path().join("bus.conf");
        std::fs::write(&conf, config).unwrap();
        let (child, address) = Self::spawn(dir.path());
        TestBus {
            dir,
            address,
            child,
        }
    }

    /// Kills the bus and starts it again on the same socket, as a restart of
    /// the system's dbus-daemon does: every connection is lost.
    pub fn restart(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
        let _ = std::fs::remove_file(self.dir.path().join("bus"));
        let (child, address) = Self::spawn(self.dir.path());
        assert_eq!(address, self.address);
        self.child = child;
    }

    fn spawn(dir: &std::path::Path) -> (Child, String) {
        let conf = dir.join("bus.conf");
        let mut child = Process::new("dbus-daemon")
            .arg(format!("--config-file={}", conf.display()))
            .args(["--nofork", "--nopidfile", "--print-address=1"])
            .stdout(Stdio::piped())
            // Its refusals and warnings, for a look when a test fails.
            .stderr(
                std::fs::OpenOptions::new()
                    .create(true)
                    .append(true)
                    .open(dir.join("bus.log"))
                    .unwrap(),
            )
            .spawn()
            .expect("dbus-daemon (Debian package dbus-daemon) is installed");
        let mut line = String::new();
        BufReader::new(child.stdout.take().unwrap())
            .read_line(&mut line)
            .unwrap();
        let address = line.trim().to_string();
        assert!(address.starts_with("unix:"), "dbus-daemon said {line:?}");
        (child, plain_address(&address))
    }

    /// Runs `busctl --address=… ARGS`, as root or as `nobody`.
    pub fn busctl(&self, as_nobody: bool, args: &[&str]) -> Output {
        let addr = format!("--address={}", self.address);
        let mut all = vec!["busctl", addr.as_str()];
        all.extend_from_slice(args);
        run_as(as_nobody, &all)
    }

    /// Runs `dbus-send --bus=… --print-reply ARGS`, which, unlike busctl,
    /// prints the D-Bus name of an error.
    pub fn dbus_send(&self, as_nobody: bool, args: &[&str]) -> Output {
        let addr = format!("--bus={}", self.address);
        let mut all = vec!["dbus-send", addr.as_str(), "--print-reply"];
        all.extend_from_slice(args);
        run_as(as_nobody, &all)
    }
}

impl Drop for TestBus {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// Runs a command, as root or as `nobody:nogroup` with no supplementary
/// groups, with a 30 s limit.
pub fn run_as(as_nobody: bool, argv: &[&str]) -> Output {
    let mut cmd = if as_nobody {
        let mut c = Process::new("setpriv");
        c.args(["--reuid=nobody", "--regid=nogroup", "--clear-groups", "--"]);
        c.args(argv);
        c
    } else {
        let mut c = Process::new(argv[0]);
        c.args(&argv[1..]);
        c
    };
    let child = cmd
        .stdin(Stdio::null())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap_or_else(|e| panic!("{argv:?}: {e}"));
    wait_timeout(child, Duration::from_secs(30), argv)
}

/// Waits for a child's output, killing it after `limit`. The output is
/// collected on another thread so a chatty child cannot block on a full
/// pipe while we wait.
pub fn wait_timeout(child: Child, limit: Duration, argv: &[&str]) -> Output {
    let pid = child.id() as libc::pid_t;
    let (tx, rx) = std::sync::mpsc::channel();
    std::thread::spawn(move || {
        let _ = tx.send(child.wait_with_output());
    });
    match rx.recv_timeout(limit) {
        Ok(out) => out.unwrap(),
        Err(_) => {
            // SAFETY: pid is our child, not yet reaped (the thread is
            // still waiting for it).
            unsafe { libc::kill(pid, libc::SIGKILL) };
            let out = rx.recv().unwrap().unwrap();
            panic!(
                "{argv:?} timed out; stdout: {} stderr: {}",
                text(&out.stdout),
                text(&out.stderr)
            );
        }
    }
}

pub fn text(b: &[u8]) -> String {
    String::from_utf8_lossy(b).into_owned()
}
