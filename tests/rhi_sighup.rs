//! Issue 8, defect 5, end to end: SIGHUP with only new `rhi` attributes
//! (communities, MED) reaches the lab's BIRD router as the new attributes on
//! the VIPs, and never as a withdraw — through the LB's own BIRD and through
//! vc5d's own speaker (whose BGP session must not restart either).

mod common;

use common::{fast_checks, lab_with, rhi_mode, wait_status};
use std::time::{Duration, Instant};
use vc5_testkit::lab::Lab;

/// The router's accepted import withdraws on its session to lb1 (IPv4 and
/// IPv6 channels summed) and the session's "since" column.
fn withdraws(lab: &Lab) -> (u64, String) {
    let out = lab
        .birdc("router", "show protocols all lb1")
        .unwrap_or_default();
    let n = out
        .lines()
        .filter_map(|l| l.trim().strip_prefix("Import withdraws:"))
        .filter_map(|rest| rest.split_whitespace().next()?.parse::<u64>().ok())
        .sum();
    let since = out
        .lines()
        .find(|l| l.starts_with("lb1 "))
        .and_then(|l| l.split_whitespace().nth(4))
        .unwrap_or_default()
        .to_string();
    (n, since)
}

fn route(lab: &Lab, net: &str) -> String {
    lab.birdc("router", &format!("show route for {net} all"))
        .unwrap_or_default()
}

fn sighup_changes_attributes_without_withdraw(with_local_bird: bool) {
    let lab = lab_with(1);
    let _router = lab.start_router_bird().unwrap();
    let _bird = with_local_bird.then(|| lab.start_lb_bird("lb1").unwrap());
    let cfg = lab
        .rhi_config("lb1")
        .replace(&lab.default_config(), &fast_checks(&lab));
    lab.write_config_for("lb1", &cfg).unwrap();
    let mut vc5d = lab.start_vc5d("lb1", "generic", &[]).unwrap();
    let mode = if with_local_bird { "bird" } else { "bgp" };
    wait_status(
        &lab,
        "lb1",
        &format!("announcing in mode {mode}"),
        Duration::from_secs(20),
        |s| rhi_mode(s) == mode,
    );
    let nets = [format!("{}/32", lab.vip4), format!("{}/128", lab.vip6)];
    let t = Instant::now();
    while !nets.iter().all(|n| route(&lab, n).contains("[lb1 ")) {
        assert!(
            t.elapsed() < Duration::from_secs(30),
            "VIPs never announced"
        );
        std::thread::sleep(Duration::from_millis(50));
    }
    // BIRD stamps the session's "since" again as its channels come up just
    // after the session: read it once it has settled.
    let mut w0_since0 = withdraws(&lab);
    loop {
        std::thread::sleep(Duration::from_millis(300));
        let again = withdraws(&lab);
        if again == w0_since0 {
            break;
        }
        w0_since0 = again;
    }
    let (w0, since0) = w0_since0;

    // BIRD passes to an eBGP neighbour only the MED its export filter sets,
    // so through BIRD the community is what the router can see.
    let new = cfg.replace(
        "  hold_time: 9\n",
        "  hold_time: 9\n  communities: [\"65000:42\"]\n  med: 77\n",
    );
    assert_ne!(new, cfg);
    lab.write_config_for("lb1", &new).unwrap();
    vc5d.signal(libc::SIGHUP).unwrap();
    let t = Instant::now();
    loop {
        let out: Vec<String> = nets.iter().map(|n| route(&lab, n)).collect();
        for (n, o) in nets.iter().zip(&out) {
            assert!(o.contains("[lb1 "), "{n} withdrawn during the reload:\n{o}");
        }
        let done = out
            .iter()
            .all(|o| o.contains("(65000,42)") && (with_local_bird || o.contains("BGP.med: 77")));
        if done {
            break;
        }
        assert!(
            t.elapsed() < Duration::from_secs(20),
            "new attributes never reached the router:\n{}\n{}",
            out.join("\n"),
            vc5d.log_text()
        );
        std::thread::sleep(Duration::from_millis(20));
    }
    // Half a second more (deliberately a fixed time) for a withdraw or a
    // session restart to show, if one came.
    std::thread::sleep(Duration::from_millis(500));
    let (w1, since1) = withdraws(&lab);
    assert_eq!(w1, w0, "the router received withdraws");
    // BIRD prints the same instant a millisecond apart now and then; a
    // restart would be seconds later (the reload came after the settling).
    let ms = |t: &str| -> i64 {
        let (hms, frac) = t.split_once('.').unwrap_or((t, "0"));
        let f: Vec<i64> = hms.split(':').filter_map(|x| x.parse().ok()).collect();
        assert_eq!(f.len(), 3, "a time of day: {t:?}");
        ((f[0] * 60 + f[1]) * 60 + f[2]) * 1000 + frac.parse::<i64>().unwrap_or(0)
    };
    assert!(
        (ms(&since1) - ms(&since0)).abs() <= 50,
        "the BGP session restarted: since {since0} then {since1}"
    );
    vc5d.terminate(Duration::from_secs(15)).unwrap();
}

#[test]
fn sighup_with_new_attributes_never_withdraws_through_bird() {
    sighup_changes_attributes_without_withdraw(true);
}

#[test]
fn sighup_with_new_attributes_never_withdraws_with_the_speaker() {
    sighup_changes_attributes_without_withdraw(false);
}
