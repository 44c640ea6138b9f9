//! Health checks deciding which reals serve, end to end in the lab: a real
//! whose HTTP server stops leaves rotation within fall × interval (+1 s)
//! while the other reals' connections go on, and returns within
//! rise × interval (+1 s) once it answers again; a service below `need`
//! makes its VIP unannounceable.

mod common;

use common::{Download, fast_checks, lab, spread, wait_log, wait_ready};
use std::collections::BTreeMap;
use std::net::IpAddr;
use std::time::{Duration, Instant};
use vc5::lab::Lab;

const INTERVAL: Duration = Duration::from_secs(1);
const RISE: u32 = 2;
const FALL: u32 = 2;

/// The lab's fast-check configuration (`rise` and `fall` of 2), with
/// `need` for web4.
fn config(lab: &Lab, need4: usize) -> String {
    let cfg = fast_checks(lab);
    let web4 = cfg.find("name: web4").expect("web4");
    let need = cfg[web4..].find("need: 1").expect("need") + web4;
    let mut cfg = cfg;
    cfg.replace_range(need..need + 7, &format!("need: {need4}"));
    cfg
}

#[test]
fn a_stopped_real_leaves_rotation_and_returns_while_others_carry_on() {
    let mut lab = lab();
    lab.write_config_text(&config(&lab, 1)).unwrap();
    let mut vc5d = lab.start_vc5d("lb1", "generic", &[]).unwrap();
    wait_ready(&lab, &mut vc5d);
    let vip4 = IpAddr::V4(lab.vip4);

    // Long downloads, then the one real not to touch and the victim.
    let downloads: Vec<Download> = (0..6)
        .map(|_| Download::start(&lab, vip4, 10_000_000, "1M"))
        .collect();
    let on: Vec<String> = downloads.iter().map(Download::real).collect();
    let victim = "real2";
    assert!(
        on.iter().any(|r| r != victim),
        "all downloads on {victim}: {on:?}"
    );

    lab.stop_httpd(victim).unwrap();
    let took = wait_log(
        &vc5d,
        &format!("addr={}}}: vc5::daemon: out of service", lab.addr4(victim)),
        Duration::from_secs(10),
    );
    let bound = INTERVAL * FALL + Duration::from_secs(1);
    assert!(
        took <= bound,
        "{victim} left after {took:?}, more than {bound:?}"
    );

    // Out of rotation: every fresh connection succeeds, none reaches it.
    for vip in lab.vips() {
        let s = spread(&lab, vip, 90);
        assert!(!s.contains_key(victim), "{vip}: {s:?}");
        assert_eq!(s.values().sum::<usize>(), 90);
    }
    // The other reals' downloads were not disturbed.
    for (d, real) in downloads.into_iter().zip(&on) {
        let bytes = d.bytes;
        let r = d.finish();
        if real != victim {
            assert_eq!(r, Ok(bytes), "a download on {real} broke");
        }
    }

    lab.start_httpd(victim).unwrap();
    let took = wait_log(
        &vc5d,
        &format!("addr={}}}: vc5::daemon: back in service", lab.addr4(victim)),
        Duration::from_secs(10),
    );
    let bound = INTERVAL * RISE + Duration::from_secs(1);
    assert!(
        took <= bound,
        "{victim} came back after {took:?}, more than {bound:?}"
    );
    let s = spread(&lab, vip4, 120);
    assert!(
        s.contains_key(victim),
        "{victim} takes connections again: {s:?}"
    );
    vc5d.terminate(Duration::from_secs(10)).unwrap();
}

#[test]
fn a_service_below_need_makes_its_vip_unannounceable() {
    let mut lab = lab();
    lab.write_config_text(&config(&lab, 3)).unwrap();
    let mut vc5d = lab.start_vc5d("lb1", "generic", &[]).unwrap();
    wait_ready(&lab, &mut vc5d);
    let vip4 = lab.vip4.to_string();
    let vip6 = lab.vip6.to_string();
    wait_log(
        &vc5d,
        &format!("VIP announceable: every service on it is up vip={vip4}"),
        Duration::from_secs(5),
    );

    lab.stop_httpd("real3").unwrap();
    wait_log(
        &vc5d,
        &format!("VIP not announceable: a service on it is down vip={vip4}"),
        Duration::from_secs(10),
    );
    let log = vc5d.log_text();
    assert!(
        !log.contains(&format!(
            "VIP not announceable: a service on it is down vip={vip6}"
        )),
        "web6 needs one real only:\n{log}"
    );
    // Down but not dead: the remaining reals still serve the VIP.
    let s: BTreeMap<String, usize> = spread(&lab, IpAddr::V4(lab.vip4), 60);
    assert_eq!(s.len(), 2, "{s:?}");

    lab.start_httpd("real3").unwrap();
    let t = Instant::now();
    loop {
        let log = vc5d.log_text();
        let back = log.rfind(&format!(
            "VIP announceable: every service on it is up vip={vip4}"
        ));
        let down = log.rfind(&format!(
            "VIP not announceable: a service on it is down vip={vip4}"
        ));
        if back > down {
            break;
        }
        assert!(
            t.elapsed() < Duration::from_secs(10),
            "VIP never announceable again:\n{log}"
        );
        std::thread::sleep(Duration::from_millis(50));
    }
    vc5d.terminate(Duration::from_secs(10)).unwrap();
}
