//! The operator examples in the repository's `bird-examples/` (next to this
//! crate): they parse (`bird -p`), and, with their `define` placeholders
//! substituted, they work: two load balancers announce the same VIPs through
//! their BIRDs and the router installs them with two next hops (ECMP).

mod common;

use std::collections::BTreeSet;
use std::path::{Path, PathBuf};
use std::process::Command;
use std::time::Duration;

use common::*;
use vc5_bird_bridge::bird::include::{self, RouteOptions};
use vc5_bird_bridge::{Announcer, AnnouncerConfig, Mode};
use vc5_testkit::bird::{Bird, Netns, TempDir, link, require_root};

fn examples() -> PathBuf {
    let p = Path::new(env!("CARGO_MANIFEST_DIR")).join("../bird-examples");
    assert!(p.join("lb.conf").exists(), "{} has no lb.conf", p.display());
    p
}

/// Replaces the value of `define NAME = …;` in a config.
fn define(conf: &str, name: &str, value: &str) -> String {
    conf.lines()
        .map(|l| {
            let t = l.trim_start();
            if t.starts_with(&format!("define {name} "))
                || t.starts_with(&format!("define {name}="))
            {
                format!("define {name} = {value};")
            } else {
                l.to_owned()
            }
        })
        .collect::<Vec<_>>()
        .join("\n")
        + "\n"
}

fn parse_check(path: &Path) {
    let out = Command::new("bird")
        .arg("-p")
        .arg("-c")
        .arg(path)
        .output()
        .expect("bird runs");
    assert!(
        out.status.success(),
        "bird -p -c {} failed: {}{}",
        path.display(),
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
}

#[test]
fn examples_pass_bird_parse_check() {
    let dir = TempDir::new("ex-parse").expect("tempdir");
    // lb.conf needs its include: a generated one with both families and attributes.
    let inc = dir.path().join("bird-vips.conf");
    include::update(
        &inc,
        &set(&[VIP4, VIP6]),
        &RouteOptions {
            communities: vec![(65000, 1)],
            med: Some(5),
            local_pref: Some(200),
        },
    )
    .expect("include");
    let lb = std::fs::read_to_string(examples().join("lb.conf")).expect("lb.conf");
    assert!(
        lb.contains("include \"/run/vc5/bird-vips.conf\";"),
        "vc5d's default include path"
    );
    let lb = lb.replace("/run/vc5/bird-vips.conf", &inc.display().to_string());
    std::fs::write(dir.path().join("lb.conf"), lb).expect("write");
    parse_check(&dir.path().join("lb.conf"));
    // And with an empty include, as vc5d writes at start.
    include::update(&inc, &BTreeSet::new(), &RouteOptions::default()).expect("include");
    parse_check(&dir.path().join("lb.conf"));
    parse_check(&examples().join("router.conf"));
}

struct Lb {
    ns: Netns,
    bird: Bird,
    cfg: AnnouncerConfig,
}

fn lb(rt: &Netns, dir: &Path, n: u8, port: &str) -> Lb {
    let ns = Netns::new(&format!("ex-lb{n}")).expect("netns");
    let a4 = format!("192.0.2.1{n}");
    let a6 = format!("2001:db8::1{n}");
    link(
        &ns,
        "eth0",
        &[&format!("{a4}/24"), &format!("{a6}/64")],
        rt,
        port,
        &[],
    )
    .expect("veth");
    rt.ip(&["link", "set", port, "master", "br0"])
        .expect("bridge port");
    let d = dir.join(format!("lb{n}"));
    std::fs::create_dir_all(&d).expect("dir");
    let inc = d.join("bird-vips.conf");
    include::update(&inc, &BTreeSet::new(), &RouteOptions::default()).expect("include");
    let mut conf = std::fs::read_to_string(examples().join("lb.conf")).expect("lb.conf");
    conf = conf.replace("/run/vc5/bird-vips.conf", &inc.display().to_string());
    conf = define(&conf, "LB_ADDRESS", &a4);
    conf = define(&conf, "LB_ADDRESS6", &a6);
    conf = define(&conf, "ROUTER1", "192.0.2.1");
    // One router in this lab.
    conf = conf
        .lines()
        .filter(|l| !l.starts_with("protocol bgp router2"))
        .collect::<Vec<_>>()
        .join("\n");
    let bird = Bird::start(&ns, &d, "bird", &conf).expect("lb BIRD");
    let mut cfg = AnnouncerConfig::new(ip(&a4), 0, vec![]);
    cfg.bird_socket = bird.socket();
    cfg.bird_include = inc;
    Lb { ns, bird, cfg }
}

fn kernel_route(rt: &Netns, v6: bool, vip: &str) -> String {
    let mut args = vec![];
    if v6 {
        args.push("-6");
    }
    args.extend(["route", "show", vip]);
    rt.ip(&args).unwrap_or_default()
}

#[test]
fn examples_give_ecmp_over_two_load_balancers() {
    require_root();
    init_tracing();
    let dir = TempDir::new("ex-ecmp").expect("tempdir");
    let rt = Netns::new("ex-rt").expect("netns");
    rt.ip(&["link", "add", "br0", "type", "bridge"])
        .expect("bridge");
    rt.ip(&["addr", "add", "192.0.2.1/24", "dev", "br0"])
        .expect("addr");
    rt.ip(&["addr", "add", "2001:db8::1/64", "dev", "br0", "nodad"])
        .expect("addr");
    rt.ip(&["link", "set", "br0", "up"]).expect("up");
    let lb1 = lb(&rt, dir.path(), 1, "p1");
    let lb2 = lb(&rt, dir.path(), 2, "p2");
    let mut conf = std::fs::read_to_string(examples().join("router.conf")).expect("router.conf");
    conf = define(&conf, "ROUTER_ADDRESS", "192.0.2.1");
    conf = define(&conf, "LB1", "192.0.2.11");
    conf = define(&conf, "LB2", "192.0.2.12");
    let router = Bird::start(&rt, dir.path(), "router", &conf).expect("router BIRD");

    let runtime = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .expect("runtime");
    runtime.block_on(async {
        // The announcers talk to BIRD over unix sockets: no namespace needed.
        let (h1, mut s1) = Announcer::start(lb1.cfg.clone(), set(&[])).expect("start");
        let (h2, mut s2) = Announcer::start(lb2.cfg.clone(), set(&[])).expect("start");
        wait_status(&mut s1, "BIRD mode", |s| s.mode == Mode::Bird).await;
        wait_status(&mut s2, "BIRD mode", |s| s.mode == Mode::Bird).await;
        h1.set_vips(set(&[VIP4, VIP6]));
        h2.set_vips(set(&[VIP4, VIP6]));
        let both = |v6: bool, vip: &str| {
            let r = kernel_route(&rt, v6, vip);
            let (a, b) = if v6 {
                ("2001:db8::11", "2001:db8::12")
            } else {
                ("192.0.2.11", "192.0.2.12")
            };
            r.contains(&format!("via {a}")) && r.contains(&format!("via {b}"))
        };
        let ok = eventually(Duration::from_secs(30), || {
            both(false, VIP4) && both(true, VIP6)
        })
        .await;
        assert!(
            ok,
            "ECMP routes expected; kernel: {}{}\nrouter: {}",
            kernel_route(&rt, false, VIP4),
            kernel_route(&rt, true, VIP6),
            router.birdc("show route all").unwrap_or_default()
        );
        // One load balancer withdraws: one next hop left.
        h2.set_vips(set(&[]));
        assert!(
            eventually(Duration::from_secs(20), || {
                let r = kernel_route(&rt, false, VIP4);
                r.contains("via 192.0.2.11") && !r.contains("192.0.2.12")
            })
            .await,
            "{}",
            kernel_route(&rt, false, VIP4)
        );
        h1.shutdown().await;
        h2.shutdown().await;
        assert!(
            eventually(Duration::from_secs(20), || kernel_route(&rt, false, VIP4)
                .is_empty())
            .await
        );
    });
    drop((lb1.bird, lb2.bird, lb1.ns, lb2.ns));
}
