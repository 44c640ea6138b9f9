//! The two-namespace lab shared by the live tests: "lb" (where vc5 and its
//! BIRD run) and "rt" (a router: BIRD, FRR or GoBGP), joined by a veth pair.
//!
//! lb: 192.0.2.1/24, 2001:db8::1/64; rt: 192.0.2.2/24, 2001:db8::2/64.
//! VIPs come from 203.0.113.0/24 and 2001:db8:ffff::/48.

#![allow(dead_code)]

use std::collections::BTreeSet;
use std::net::IpAddr;
use std::path::PathBuf;
use std::time::Duration;

use vc5_bird_bridge::AnnouncerConfig;
use vc5_testkit::bird::{Bird, Netns, TempDir, link, require_root, wait_until};

pub const LB4: &str = "192.0.2.1";
pub const RT4: &str = "192.0.2.2";
pub const LB6: &str = "2001:db8::1";
pub const RT6: &str = "2001:db8::2";
pub const VIP4: &str = "203.0.113.10";
pub const VIP4B: &str = "203.0.113.11";
pub const VIP6: &str = "2001:db8:ffff::10";
pub const LB_AS: u32 = 65000;
pub const RT_AS: u32 = 65001;

/// How long a route may take to show at the router in a test (generous:
/// CI machines are slow; the benchmark measures the real figure).
pub const ROUTE_WAIT: Duration = Duration::from_secs(20);

pub struct Lab {
    pub lb: Netns,
    pub rt: Netns,
    pub dir: TempDir,
}

impl Lab {
    pub fn new(tag: &str) -> Lab {
        require_root();
        init_tracing();
        let lb = Netns::new(&format!("{tag}-lb")).expect("lb namespace");
        let rt = Netns::new(&format!("{tag}-rt")).expect("rt namespace");
        link(
            &lb,
            "eth0",
            &["192.0.2.1/24", "2001:db8::1/64"],
            &rt,
            "eth0",
            &["192.0.2.2/24", "2001:db8::2/64"],
        )
        .expect("veth");
        let dir = TempDir::new(tag).expect("tempdir");
        Lab { lb, rt, dir }
    }

    pub fn path(&self, name: &str) -> PathBuf {
        self.dir.path().join(name)
    }

    /// An announcer config for the lb side: vc5's paths in the lab dir.
    pub fn announcer_config(&self, peers: Vec<IpAddr>) -> AnnouncerConfig {
        let mut c = AnnouncerConfig::new(ip(LB4), LB_AS, peers);
        c.bird_socket = self.path("lb.ctl");
        c.bird_include = self.path("vc5/bird-vips.conf");
        c.next_hop6 = Some(LB6.parse().expect("addr"));
        c.backoff_min = Duration::from_millis(200);
        c.backoff_max = Duration::from_secs(2);
        c.bird_probe_interval = Duration::from_millis(500);
        c.bird_retry_interval = Duration::from_millis(500);
        c
    }

    /// A BIRD router in rt peering with `peer` (lb) by eBGP, importing
    /// everything in IPv4 and IPv6 over the IPv4 session.
    pub fn router_bird(&self) -> Bird {
        let conf = format!(
            "router id {RT4};\n\
             protocol device {{}}\n\
             protocol bgp lb {{\n\
               local {RT4} as {RT_AS};\n\
               neighbor {LB4} as {LB_AS};\n\
               hold time 9;\n\
               connect retry time 1;\n\
               error wait time 1, 2;\n\
               ipv4 {{ import all; export none; }};\n\
               ipv6 {{ import all; export none; }};\n\
             }}\n"
        );
        Bird::start(&self.rt, self.dir.path(), "rt", &conf).expect("router BIRD")
    }

    /// The lb's BIRD: includes vc5's file and exports its protocols to rt.
    pub fn lb_bird(&self, include: bool) -> Bird {
        let inc = self.path("vc5/bird-vips.conf");
        // BIRD refuses to start on a missing include; vc5 creates it later.
        if !inc.exists() {
            vc5_bird_bridge::bird::include::update(&inc, &BTreeSet::new(), &Default::default())
                .expect("initial include");
        }
        let include_line = if include {
            format!("include \"{}\";\n", inc.display())
        } else {
            String::new()
        };
        let conf = format!(
            "router id {LB4};\n\
             protocol device {{}}\n\
             {include_line}\
             protocol bgp upstream {{\n\
               local {LB4} as {LB_AS};\n\
               neighbor {RT4} as {RT_AS};\n\
               hold time 9;\n\
               connect retry time 1;\n\
               error wait time 1, 2;\n\
               ipv4 {{ import none; export where proto = \"vc5_vips4\"; }};\n\
               ipv6 {{ import none; export where proto = \"vc5_vips6\"; next hop address {LB6}; }};\n\
             }}\n"
        );
        Bird::start(&self.lb, self.dir.path(), "lb", &conf).expect("lb BIRD")
    }
}

pub fn ip(s: &str) -> IpAddr {
    s.parse().expect("address")
}

pub fn set(list: &[&str]) -> BTreeSet<IpAddr> {
    list.iter().map(|s| ip(s)).collect()
}

pub fn host(s: &str) -> String {
    if s.contains(':') {
        format!("{s}/128")
    } else {
        format!("{s}/32")
    }
}

/// Waits until the BIRD router has (or lacks) `vip` via `via`.
pub fn bird_route(rt: &Bird, vip: &str, via: &str, present: bool) -> bool {
    wait_until(ROUTE_WAIT, Duration::from_millis(20), || {
        rt.has_route(&host(vip), Some(via)) == present
    })
}

pub fn init_tracing() {
    let _ = tracing_subscriber::fmt()
        .with_env_filter(
            tracing_subscriber::EnvFilter::try_from_default_env()
                .unwrap_or_else(|_| "vc5_bird_bridge=debug".into()),
        )
        .with_test_writer()
        .try_init();
}

/// Polls `f` (a quick blocking check, e.g. a CLI call) until true, sleeping
/// asynchronously in between so the announcer's tasks keep running.
pub async fn eventually(limit: Duration, mut f: impl FnMut() -> bool) -> bool {
    let end = tokio::time::Instant::now() + limit;
    loop {
        if f() {
            return true;
        }
        if tokio::time::Instant::now() >= end {
            return false;
        }
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
}

/// Waits for a status that satisfies `pred`; panics with the last status.
pub async fn wait_status(
    rx: &mut tokio::sync::watch::Receiver<vc5_bird_bridge::Status>,
    what: &str,
    pred: impl FnMut(&vc5_bird_bridge::Status) -> bool,
) -> vc5_bird_bridge::Status {
    let got = match tokio::time::timeout(ROUTE_WAIT, rx.wait_for(pred)).await {
        Ok(Ok(s)) => Some(s.clone()),
        _ => None,
    };
    got.unwrap_or_else(|| panic!("timed out waiting for {what}; status: {:#?}", *rx.borrow()))
}
