//! End to end, health probes through the VIP: checks with `probe: vip` run
//! from vc5d's probe namespace, through the XDP program, to the VIP on each
//! real. A real that still answers on its own address but has lost the VIP
//! leaves rotation within `fall × interval` (plus a timeout) and comes back
//! when the VIP does; the namespace goes with vc5d however it stops, and a
//! vc5d started after a crash makes a fresh one.

mod common;

use common::{real_healthy, spread, wait_ready, wait_status};
use std::time::{Duration, Instant};
use vc5_testkit::lab::{Lab, LabChild, LabOptions};

const INTERVAL: Duration = Duration::from_secs(1);
const TIMEOUT: Duration = Duration::from_millis(500);
const RISE: u32 = 2;
const FALL: u32 = 2;

/// `yaml` with each service checking through its VIP and, as a second
/// check, the real's own address: the status then shows which one fails.
fn with_vip_checks(yaml: &str) -> String {
    let checks = "    checks:\n      - {name: health, type: http, port: 80, path: /health}";
    assert!(yaml.contains(checks), "{yaml}");
    yaml.replace(
        checks,
        "    checks:\n\
         \x20     - {name: via-vip, type: http, port: 80, path: /health, probe: vip, interval: 1s, timeout: 500ms, rise: 2, fall: 2}\n\
         \x20     - {name: own, type: http, port: 80, path: /health, interval: 1s, timeout: 500ms, rise: 2, fall: 2}",
    )
}

/// The row of real `addr` in service `svc` of a status.
fn row<'a>(st: &'a serde_json::Value, svc: &str, addr: &str) -> Option<&'a serde_json::Value> {
    st["services"]
        .as_array()?
        .iter()
        .find(|s| s["name"] == svc)?["reals"]
        .as_array()?
        .iter()
        .find(|r| r["addr"] == addr)
}

/// The probe veth's host end in `lb`, if there is one.
fn probe_veth(lab: &Lab, lb: &str) -> Option<String> {
    let links = lab.run(lb, &["ip", "-o", "link", "show"]).unwrap();
    links
        .lines()
        .filter_map(|l| l.split(": ").nth(1))
        .map(|n| n.split('@').next().unwrap_or(n).to_string())
        .find(|n| n.starts_with("vc5p"))
}

fn wait_probe_veth(lab: &Lab, lb: &str, present: bool, why: &str) {
    let t = Instant::now();
    while probe_veth(lab, lb).is_some() != present {
        assert!(
            t.elapsed() < Duration::from_secs(10),
            "{why}: probe veth present = {}",
            !present
        );
        std::thread::sleep(Duration::from_millis(50));
    }
}

/// Starts vc5d on lb1 and waits until `reals` are healthy everywhere.
fn start(lab: &Lab, reals: &[String]) -> LabChild {
    let mut vc5d = lab.start_vc5d("lb1", "native", &[]).unwrap();
    wait_ready(lab, &mut vc5d);
    wait_status(
        lab,
        "lb1",
        "every real healthy through its VIPs",
        Duration::from_secs(20),
        |st| {
            reals
                .iter()
                .all(|r| real_healthy(st, r.parse().unwrap(), true))
        },
    );
    // Checks through the VIP start only once their real's way is known,
    // so none failed for want of one: no probe found no way, and no check
    // failed (a first result decides at once, so one would have taken its
    // real out of service on every start).
    let st: serde_json::Value = serde_json::from_str(
        &lab.curl("lb1", "http://127.0.0.1:8080/status.json", &[])
            .unwrap(),
    )
    .unwrap();
    assert_eq!(
        st["probes"]["no_way"]["packets"].as_u64().unwrap_or(0),
        0,
        "{}",
        st["probes"]
    );
    let log = vc5d.log_text();
    let last_start = log.rfind("=== ").unwrap_or(0);
    assert!(
        !log[last_start..].contains("check failing"),
        "a check failed at start:\n{log}"
    );
    vc5d
}

/// The whole story on one lab: `reals` (node names) serve both VIPs, the
/// first of them holding the VIPs on `dev`; it loses the IPv4 VIP, leaves
/// web4 (not web6), and comes back with the VIP.
fn lost_vip(lab: &Lab, reals: &[String], dev: &str) -> LabChild {
    let addrs: Vec<String> = reals.iter().map(|r| lab.addr4(r).to_string()).collect();
    let vc5d = start(lab, &addrs);
    assert!(probe_veth(lab, "lb1").is_some(), "vc5d made its probe veth");
    let [vip4, vip6] = lab.vips();
    let real = reals[0].clone();
    let addr = addrs[0].clone();
    let n = reals.len();
    assert_eq!(
        spread(lab, vip4, 20 * n).len(),
        n,
        "every real serves at first"
    );
    // The probes went out through the program and their answers came back,
    // as the status and /metrics count them (read every 2 s).
    wait_status(
        lab,
        "lb1",
        "probes counted",
        Duration::from_secs(10),
        |st| {
            ["sent", "reply"]
                .iter()
                .all(|what| st["probes"][*what]["packets"].as_u64().unwrap_or(0) > 0)
        },
    );
    let metrics = lab
        .curl("lb1", "http://127.0.0.1:8080/metrics", &[])
        .unwrap();
    assert!(
        metrics.contains("vc5_probe_packets_total{reason=\"reply\"}"),
        "{metrics}"
    );

    // The real loses the IPv4 VIP; its web server still answers on its own
    // address, and on the IPv6 VIP.
    lab.run(
        &real,
        &["ip", "addr", "del", &format!("{vip4}/32"), "dev", dev],
    )
    .unwrap();
    let left = wait_status(
        lab,
        "lb1",
        "the real out of web4",
        Duration::from_secs(15),
        |st| row(st, "web4", &addr).is_some_and(|r| r["healthy"] == false),
    );
    let bound = INTERVAL * FALL + TIMEOUT + Duration::from_millis(1500);
    println!(
        "{dev}: a real without the VIP left rotation after {left:?} (fall × interval = {:?})",
        INTERVAL * FALL
    );
    assert!(left <= bound, "left after {left:?}, more than {bound:?}");
    let st: serde_json::Value = serde_json::from_str(
        &lab.curl("lb1", "http://127.0.0.1:8080/status.json", &[])
            .unwrap(),
    )
    .unwrap();
    let r = row(&st, "web4", &addr).unwrap();
    let check = |name: &str| {
        r["checks"]
            .as_array()
            .and_then(|c| c.iter().find(|c| c["name"] == name))
            .unwrap_or_else(|| panic!("no check {name}: {r}"))
            .clone()
    };
    assert_eq!(check("via-vip")["passing"], false, "{r}");
    assert_eq!(check("via-vip")["probe"], "vip", "{r}");
    assert_eq!(check("via-vip")["via"], vip4.to_string(), "{r}");
    assert_eq!(
        check("own")["passing"],
        true,
        "its own address still answers: {r}"
    );
    assert!(r["reason"].as_str().is_some_and(|s| !s.is_empty()), "{r}");
    assert_eq!(
        row(&st, "web6", &addr).map(|r| r["healthy"].clone()),
        Some(serde_json::Value::Bool(true)),
        "the IPv6 VIP is still on the real: it serves web6"
    );
    let s = spread(lab, vip4, 20 * n);
    assert!(
        !s.contains_key(&real),
        "no client reaches the real without the VIP: {s:?}"
    );
    assert_eq!(s.len(), n - 1, "{s:?}");
    assert_eq!(spread(lab, vip6, 20 * n).len(), n, "web6 keeps them all");

    // The VIP comes back: so does the real.
    lab.run(
        &real,
        &["ip", "addr", "add", &format!("{vip4}/32"), "dev", dev],
    )
    .unwrap();
    let back = wait_status(
        lab,
        "lb1",
        "the real back in web4",
        Duration::from_secs(15),
        |st| row(st, "web4", &addr).is_some_and(|r| r["healthy"] == true),
    );
    println!(
        "{dev}: and came back {back:?} after the VIP did (rise × interval = {:?})",
        INTERVAL * RISE
    );
    assert!(
        back <= INTERVAL * RISE + TIMEOUT + Duration::from_millis(1500),
        "{back:?}"
    );
    assert!(spread(lab, vip4, 20 * n).contains_key(&real));
    vc5d
}

/// Layer 2: the VIP on the real's loopback. Then the namespace's life:
/// gone after a clean stop and after a crash, made afresh by the next vc5d.
#[test]
fn a_real_that_lost_the_vip_leaves_rotation_and_returns_with_it() {
    let lab = common::lab();
    lab.prepare_native_xdp().unwrap();
    lab.write_config_text(&with_vip_checks(&lab.default_config()))
        .unwrap();
    let reals = lab.reals();
    let mut vc5d = lost_vip(&lab, &reals, "lo");

    // A clean stop removes the namespace and its veth.
    let status = vc5d.terminate(Duration::from_secs(10)).unwrap();
    assert!(status.success(), "{status}\n{}", vc5d.log_text());
    wait_probe_veth(&lab, "lb1", false, "after a clean stop");

    // A crash leaves nothing either (the namespace dies with the process),
    // and the next vc5d probes through the VIP again.
    let addrs: Vec<String> = reals.iter().map(|r| lab.addr4(r).to_string()).collect();
    let mut vc5d = start(&lab, &addrs);
    vc5d.signal(libc::SIGKILL).unwrap();
    let _ = vc5d.terminate(Duration::from_secs(5));
    wait_probe_veth(&lab, "lb1", false, "after SIGKILL");
    let mut vc5d = start(&lab, &addrs);
    assert!(probe_veth(&lab, "lb1").is_some());
    let status = vc5d.terminate(Duration::from_secs(10)).unwrap();
    assert!(status.success(), "{status}\n{}", vc5d.log_text());
}

/// A lab of `opts`, its vc5d checking `config`'s services through their
/// VIPs; [`lost_vip`] on `reals`, which hold the VIPs on `dev`.
fn lost_vip_in(
    opts: LabOptions,
    config: fn(&Lab) -> String,
    reals: fn(&Lab) -> Vec<String>,
    dev: &str,
) {
    let lab = Lab::new(LabOptions {
        vc5d: Some(env!("CARGO_BIN_EXE_vc5d").into()),
        ..opts
    })
    .expect("building the lab (needs root)");
    lab.prepare_native_xdp().unwrap();
    lab.write_config_text(&with_vip_checks(&config(&lab)))
        .unwrap();
    let mut vc5d = lost_vip(&lab, &reals(&lab), dev);
    let status = vc5d.terminate(Duration::from_secs(10)).unwrap();
    assert!(status.success(), "{status}\n{}", vc5d.log_text());
}

/// Through a tunnel (GRE) to reals behind a router, which decapsulate into
/// a TUN device holding the VIPs: the probe takes the tunnel, and a real
/// whose tunnel end lost the VIP fails.
#[test]
fn a_tunnel_real_that_lost_the_vip_leaves_rotation() {
    lost_vip_in(
        LabOptions {
            remote_reals: 3,
            ..LabOptions::default()
        },
        |lab| lab.remote_config("gre", false),
        Lab::remote_reals,
        "vc5tun0",
    );
}

/// Reals on two VLANs behind a trunk: the probe carries its real's tag.
#[test]
fn a_vlan_real_that_lost_the_vip_leaves_rotation() {
    lost_vip_in(
        LabOptions {
            vlan_reals: 4,
            ..LabOptions::default()
        },
        Lab::vlan_config,
        Lab::vlan_reals,
        "lo",
    );
}

/// A script that runs this build's vc5d without CAP_SYS_ADMIN (as the
/// shipped unit does), removed on drop.
struct NoSysAdmin(std::path::PathBuf);

impl NoSysAdmin {
    fn new() -> NoSysAdmin {
        use std::os::unix::fs::PermissionsExt;
        let path = std::env::temp_dir().join(format!("vc5d-no-sys-admin-{}", std::process::id()));
        std::fs::write(
            &path,
            format!(
                "#!/bin/sh\nexec setpriv --bounding-set=-sys_admin --inh-caps=-sys_admin -- {} \"$@\"\n",
                env!("CARGO_BIN_EXE_vc5d")
            ),
        )
        .unwrap();
        std::fs::set_permissions(&path, std::fs::Permissions::from_mode(0o755)).unwrap();
        NoSysAdmin(path)
    }
}

impl Drop for NoSysAdmin {
    fn drop(&mut self) {
        let _ = std::fs::remove_file(&self.0);
    }
}

/// Without CAP_SYS_ADMIN there is no probe namespace: a configuration
/// with `probe: vip` is refused at start and on reload, with the reason;
/// one without is served as before.
#[test]
fn without_the_namespace_probe_vip_is_refused_and_the_rest_served() {
    let script = NoSysAdmin::new();
    let lab = Lab::new(LabOptions {
        vc5d: Some(script.0.clone()),
        ..LabOptions::default()
    })
    .expect("building the lab (needs root)");
    let vip_yaml = with_vip_checks(&lab.default_config());
    lab.write_config_text(&vip_yaml).unwrap();
    let mut vc5d = lab.start_vc5d("lb1", "generic", &[]).unwrap();
    let t = Instant::now();
    let status = loop {
        if let Some(s) = vc5d.try_wait().unwrap() {
            break s;
        }
        assert!(
            t.elapsed() < Duration::from_secs(30),
            "vc5d kept running:\n{}",
            vc5d.log_text()
        );
        std::thread::sleep(Duration::from_millis(50));
    };
    let log = vc5d.log_text();
    assert!(!status.success(), "{log}");
    assert!(log.contains("need vc5d's probe namespace"), "{log}");

    lab.write_config_text(&lab.default_config()).unwrap();
    let mut vc5d = lab.start_vc5d("lb1", "generic", &[]).unwrap();
    wait_ready(&lab, &mut vc5d);
    assert!(
        vc5d.log_text().contains("no probe namespace"),
        "{}",
        vc5d.log_text()
    );
    assert!(probe_veth(&lab, "lb1").is_none());
    lab.write_config_text(&vip_yaml).unwrap();
    vc5d.signal(libc::SIGHUP).unwrap();
    wait_status(
        &lab,
        "lb1",
        "the reload refused",
        Duration::from_secs(10),
        |st| {
            st["reloads"]["refused"] == 1
                && st["reloads"]["last"]["error"]
                    .as_str()
                    .is_some_and(|e| e.contains("probe: vip"))
        },
    );
    let status = vc5d.terminate(Duration::from_secs(10)).unwrap();
    assert!(status.success(), "{status}\n{}", vc5d.log_text());
}
