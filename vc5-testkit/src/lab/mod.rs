//! The vc5 lab: a complete L2 DSR network built from network namespaces on one machine.
//!
//! The lab is the README's first command (`vc5-lab`), the bed of the end-to-end tests and
//! the demonstration. One [`Lab`] is one private copy of this network:
//!
//! ```text
//!   client network                       LAN: bridge br0 in namespace "switch"
//!   198.51.100.0/24, 2001:db8:1::/64     203.0.113.0/24, 2001:db8:2::/64
//!
//!   client eth0 ──── eth1 router eth0 ──┬── eth0 lb1    .11  ::11   (vc5d + XDP)
//!   .2   ::2          .1 ::1   .1 ::1   ├── eth0 real1  .21  ::21   VIPs on lo, httpd on :80
//!                                       ├── eth0 real2  .22  ::22
//!                                       └── eth0 real3  .23  ::23
//!
//!   VIPs 192.0.2.80 and 2001:db8:80::80, routed by the router to lb1 (see `route_vips_via`)
//!
//!   with LabOptions::remote_reals, a second subnet behind the router (bridge br1 in "switch"):
//!   10.3.0.0/24, 2001:db8:3::/64    router eth2 .1 ::1 ──┬── eth0 remote1  .31  ::31
//!                                                       └── eth0 remote2  .32  ::32  …
//! ```
//!
//! With `LabOptions::vlan_reals`, reals on two VLANs behind the load balancers' `eth0` as a
//! trunk: `vreal1`, `vreal3`… on VLAN 10 (10.10.0.0/24, 2001:db8:10::/64, bridge br10),
//! `vreal2`, `vreal4`… on VLAN 20 (10.20.0.0/24, 2001:db8:20::/64, br20). The kernel has no
//! 8021q module and its bridge no VLAN filtering, so `vc5-vlan-relay`
//! ([`crate::vlan_relay`]) does the tagging in user space: one in the switch between br0
//! (the trunk side) and br10/br20, and one in each load balancer between `eth0` and the
//! stand-ins for `eth0.10` and `eth0.20` (veths `vlan10`, `vlan20` with `eth0`'s MAC and
//! an address on the VLAN), so that the load balancer's own ARP, NDP and health checks go
//! tagged over its trunk as they would through 8021q. The router has an untagged leg on
//! each VLAN (`vlan10`, `vlan20`), the VLAN reals' gateway. [`Lab::vlan_config`] is a
//! configuration with `vlans` over them.
//!
//! Remote reals are reached only by layer-3 DSR: the kernel here has no tunnel modules, so
//! each runs `vc5-decap` ([`crate::decap`]), which takes IPIP, GRE, FOU ([`FOU_PORT`]) and
//! GUE ([`GUE_PORT`]) packets addressed to it, strips the outer headers and writes the
//! client's packet into a TUN device holding the VIPs; its HTTP server answers from the VIP
//! straight to the client through the router. [`Lab::remote_config`] is a configuration
//! that tunnels to them.
//!
//! A request from the client reaches the router, which forwards it to a load balancer by a
//! static route; the load balancer's XDP program rewrites the destination MAC to a real's
//! and bounces the frame back onto the bridge; the real holds the VIP on `lo`, answers from
//! it, and its reply goes straight to the router (Direct Server Return). More load
//! balancers (`LabOptions::load_balancers`, `lb2` is `.12`/`::12`) and reals
//! (`LabOptions::reals`) are a matter of options; `route_vips_ecmp` spreads the VIPs over
//! several of them the way the BIRD router will.
//!
//! Flow sync: [`Lab::with_flow_sync`] adds `multicast` ([`FLOW_SYNC_GROUP`]) and
//! `flow_sync_key` ([`Lab::flow_sync_key`], a 0600 file with one random key) to a
//! configuration, and [`Lab::start_flowsync`] runs `vc5-flowsync` on a load balancer. To
//! make a flow's path known in advance, [`Lab::predicted_real`] computes the real vc5's
//! table gives a 4-tuple (with the data plane's own hash and table code) and
//! [`Lab::router_next_hop`] the load balancer the router's ECMP route picks for it; the
//! router hashes the 5-tuple itself (multipath policy 3), never a socket's random hash.
//! [`Lab::start_transfer`] starts a paced download from a given client port and checks it
//! against [`Lab::reference_sha256`]; every real also answers UDP on [`UDP_PORT`]
//! ([`Lab::config_with_udp`]).
//!
//! [`Lab::forward`] makes a port inside a namespace reachable on the host's loopback (a
//! thread of this process accepts there and connects from inside the namespace), which is
//! how `vc5-lab` shows each load balancer's console on the host
//! ([`Lab::forward_console`]).
//!
//! Every name is private to one lab: the namespaces are `v5-<pid>-<n>-<node>` (so labs in
//! parallel tests and concurrent processes never collide), and the interfaces live only
//! inside them (`eth0`/`eth1` in a node, the node's name on the switch side), so nothing is
//! ever created in, or changed on, the host's own network namespace. The lab's files (the
//! HTTP server, vc5d's configuration and logs, one bpffs mount per load balancer) live in
//! `/run/vc5-lab-<pid>-<n>/`.
//!
//! Dropping a `Lab` kills every process inside its namespaces, unmounts the bpffs mounts,
//! deletes the namespaces (which destroys their veths and the bridge) and removes the
//! directory. A process killed outright (SIGKILL) cannot run that; [`Lab::cleanup_stale`]
//! (run by every `Lab::new`, and by `vc5-lab --cleanup`) removes labs whose process is gone.
//!
//! Kernel facts the lab works around (see `design.md` §5): native XDP on a veth needs an
//! XDP program on the peer, or frames it transmits with `XDP_TX` are dropped, and the
//! sender's TX checksum offload must be off, or the XDP program sees (and forwards) packets
//! whose checksum was never filled in. The lab turns TX offload off on every veth end it
//! creates; [`Lab::prepare_native_xdp`] adds the peer program.
//!
//! In a test:
//!
//! ```no_run
//! use vc5_testkit::lab::{Lab, LabOptions};
//!
//! let lab = Lab::new(LabOptions::default())?; // reals answering, VIPs routed to lb1
//! lab.prepare_native_xdp()?;
//! let mut vc5d = lab.start_vc5d("lb1", "native", &[])?; // log: lab.vc5d_log("lb1")
//! // ... wait until it is ready, then:
//! let body = lab.curl("client", &Lab::url(lab.vip4.into(), "/"), &[])?;
//! assert!(body.contains(&format!("client={}", lab.addr4("client")))); // "real=real2 …"
//! vc5d.terminate(std::time::Duration::from_secs(5))?;
//! # Ok::<(), anyhow::Error>(())
//! ```
//!
//! [`Lab::exec`], [`Lab::run`], [`Lab::sh`] and [`Lab::spawn`] run commands in a node;
//! [`Lab::run_in`] runs Rust code there (with [`http_get`] for requests by the hundred).
//!
//! All of this needs root, `ip` (iproute2), `ethtool`, `python3` and `curl`; `lab/deps`
//! installs them, and `clang-19` for `prepare_native_xdp`.

use std::collections::HashSet;
use std::ffi::CString;
use std::fs::{self, File, OpenOptions};
use std::io::{Read, Write};
use std::net::{IpAddr, Ipv4Addr, Ipv6Addr, SocketAddr, TcpStream};
use std::os::fd::AsRawFd;
use std::os::unix::fs::{DirBuilderExt, OpenOptionsExt, PermissionsExt};
use std::os::unix::process::CommandExt;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, ExitStatus, Output, Stdio};
use std::sync::Mutex;
use std::sync::atomic::{AtomicU32, AtomicUsize, Ordering};
use std::time::{Duration, Instant};

use anyhow::{Context, Result, anyhow, bail, ensure};

/// The HTTP server every real runs; embedded so that a built `vc5-lab` needs no checkout.
const HTTPD_PY: &str = include_str!("../../../lab/httpd.py");

/// BIRD configurations of `bird-examples/`, used as they are but for their
/// `define` placeholders, the include path and the log.
const BIRD_ROUTER_CONF: &str = include_str!("../../../bird-examples/router.conf");
const BIRD_LB_CONF: &str = include_str!("../../../bird-examples/lb.conf");

/// The lab's AS numbers.
pub const LB_ASN: u32 = 65000;
pub const ROUTER_ASN: u32 = 65001;

/// The program `prepare_native_xdp` puts on the switch side of each load balancer's veth.
/// It only has to exist: its presence is what makes the veth deliver `XDP_TX` frames.
const XDP_PASS_C: &str = r#"
#include <linux/bpf.h>
#include <bpf/bpf_helpers.h>

SEC("xdp")
int xdp_pass(struct xdp_md *ctx)
{
	return XDP_PASS;
}

char _license[] SEC("license") = "GPL";
"#;

/// The HTTP port of the services and of the reals' servers.
pub const HTTP_PORT: u16 = 80;

/// The UDP port on which every real answers datagrams sent to a VIP (`lab/httpd.py`'s
/// `--udp-port`: one answer per datagram, naming the real), and accepts TCP connections
/// for health checks; the services of [`Lab::config_with_udp`].
pub const UDP_PORT: u16 = 7;

/// The lab's flow-sync group (`multicast`), on the LAN. Administratively scoped, so that
/// the reals (which join no such group) are not members, unlike 224.0.0.1.
pub const FLOW_SYNC_GROUP: &str = "239.5.5.5:9999";

/// The lab's VLAN IDs (`LabOptions::vlan_reals`).
pub const VLANS: [u16; 2] = [10, 20];

/// The UDP ports on which the remote reals' `vc5-decap` takes FOU and GUE.
pub const FOU_PORT: u16 = 5555;
pub const GUE_PORT: u16 = 6080;

/// Where `ip netns` keeps its named namespaces.
const NETNS_DIR: &str = "/run/netns";

/// Labs of this process are numbered so that parallel tests get distinct names.
static NEXT_LAB: AtomicU32 = AtomicU32::new(0);

/// The first `ip netns add` on a machine turns /run/netns into a shared bind mount; two of
/// them racing can stack two mounts and hide a namespace, so this process adds one at a time.
static NETNS_ADD: Mutex<()> = Mutex::new(());

/// How a [`Lab`] is built.
#[derive(Clone, Debug)]
pub struct LabOptions {
    /// Number of load-balancer namespaces, `lb1` … (1–9).
    pub load_balancers: usize,
    /// Number of real servers, `real1` … (1–9).
    pub reals: usize,
    /// Number of real servers in a second subnet behind the router, `remote1` … (0–9),
    /// reachable only through tunnels (see the module documentation).
    pub remote_reals: usize,
    /// Number of real servers on VLANs 10 and 20 behind the trunk, `vreal1` … (0–8,
    /// odd ones on VLAN 10, even ones on VLAN 20; see the module documentation).
    pub vlan_reals: usize,
    /// The vc5d binary for [`Lab::start_vc5d`]. `None`: `$VC5D`, else the `vc5d` beside the
    /// running executable (or beside its parent directory, for test binaries in `deps/`).
    pub vc5d: Option<PathBuf>,
    /// The vc5-flowsync binary for [`Lab::start_flowsync`]. `None`: `$VC5_FLOWSYNC`, else
    /// the `vc5-flowsync` beside vc5d.
    pub vc5_flowsync: Option<PathBuf>,
    /// Leave the lab directory (logs, configuration) in place on drop, for debugging.
    pub keep_dir: bool,
}

impl Default for LabOptions {
    fn default() -> Self {
        LabOptions {
            load_balancers: 1,
            reals: 3,
            remote_reals: 0,
            vlan_reals: 0,
            vc5d: None,
            vc5_flowsync: None,
            keep_dir: false,
        }
    }
}

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum Kind {
    Client,
    Router,
    Switch,
    Lb,
    Real,
    /// A real in the remote subnet.
    Remote,
    /// A real on VLAN 10 or 20.
    VlanReal,
}

#[derive(Clone, Debug)]
struct Node {
    name: String,
    ns: String,
    kind: Kind,
    /// Last octet of the node's address on its network (and of its MAC).
    host: u8,
}

/// One running lab. See the module documentation for the topology.
///
/// Node names are `client`, `router`, `switch`, `lb1`…, `real1`…; methods that take one
/// panic on a name the lab does not have, since that is a bug in the caller.
pub struct Lab {
    /// Unique prefix of every namespace name, `v5-<pid>-<n>`.
    pub id: String,
    /// The IPv4 VIP (a /32 on every real's `lo`).
    pub vip4: Ipv4Addr,
    /// The IPv6 VIP (a /128 on every real's `lo`).
    pub vip6: Ipv6Addr,
    dir: PathBuf,
    nodes: Vec<Node>,
    opts: LabOptions,
    /// bpffs mount points, unmounted on drop.
    mounts: Vec<PathBuf>,
    /// The reals' HTTP servers.
    children: std::collections::BTreeMap<String, LabChild>,
    /// The remote reals' tunnel ends, by node.
    decaps: std::collections::BTreeMap<String, crate::decap::Decap>,
    /// The tagging relays, by the node they run in (`switch`, `lb1`, …).
    relays: std::collections::BTreeMap<String, crate::vlan_relay::VlanRelay>,
    /// Numbers the log files of `spawn`.
    spawned: AtomicUsize,
}

mod config;
mod daemons;
mod forward;
mod httpd;
mod nodes;
mod process;
mod teardown;
#[cfg(test)]
mod tests;
mod tools;
mod traffic;

pub use forward::Forward;
pub use process::LabChild;
use teardown::*;
use tools::*;
pub use tools::{compile_bpf, compile_bpf_with, http_get, retry};
pub use traffic::{Transfer, TransferEnd, sha256_file};

impl Lab {
    /// Builds a lab: namespaces, links, addresses, routes (VIPs via `lb1`), and an HTTP
    /// server on every real, answering before this returns. Fails if not root.
    pub fn new(opts: LabOptions) -> Result<Lab> {
        require_root()?;
        ensure!(
            (1..=9).contains(&opts.load_balancers)
                && (1..=9).contains(&opts.reals)
                && opts.remote_reals <= 9
                && opts.vlan_reals <= 8,
            "a lab has 1 to 9 load balancers, 1 to 9 reals, 0 to 9 remote reals and 0 to 8 VLAN reals"
        );
        for tool in ["ip", "ethtool", "curl"] {
            find_program(&[tool]).with_context(|| format!("{tool} is missing: run lab/deps"))?;
        }
        python()?;
        Lab::cleanup_stale();

        let pid = std::process::id();
        let n = NEXT_LAB.fetch_add(1, Ordering::Relaxed);
        let id = format!("v5-{pid}-{n}");
        // Only a dead process of our pid can have left this name behind.
        remove_lab(&id, &lab_dir(pid, n));

        let mut nodes = vec![
            node(&id, "client", Kind::Client, 2),
            node(&id, "router", Kind::Router, 1),
            node(&id, "switch", Kind::Switch, 0),
        ];
        for i in 1..=opts.load_balancers {
            nodes.push(node(&id, &format!("lb{i}"), Kind::Lb, 10 + i as u8));
        }
        for i in 1..=opts.reals {
            nodes.push(node(&id, &format!("real{i}"), Kind::Real, 20 + i as u8));
        }
        for i in 1..=opts.remote_reals {
            nodes.push(node(&id, &format!("remote{i}"), Kind::Remote, 30 + i as u8));
        }
        for i in 1..=opts.vlan_reals {
            nodes.push(node(
                &id,
                &format!("vreal{i}"),
                Kind::VlanReal,
                40 + i as u8,
            ));
        }
        let mut lab = Lab {
            id,
            vip4: Ipv4Addr::new(192, 0, 2, 80),
            vip6: Ipv6Addr::new(0x2001, 0xdb8, 0x80, 0, 0, 0, 0, 0x80),
            dir: lab_dir(pid, n),
            nodes,
            opts,
            mounts: Vec::new(),
            children: std::collections::BTreeMap::new(),
            decaps: std::collections::BTreeMap::new(),
            relays: std::collections::BTreeMap::new(),
            spawned: AtomicUsize::new(0),
        };
        // On failure `lab` is dropped here, which removes whatever part was built.
        let id = lab.id.clone();
        lab.build().with_context(|| format!("building lab {id}"))?;
        Ok(lab)
    }

    fn build(&mut self) -> Result<()> {
        fs::DirBuilder::new().mode(0o755).create(&self.dir)?;
        fs::write(self.dir.join("httpd.py"), HTTPD_PY)?;

        for node in &self.nodes {
            let _guard = NETNS_ADD.lock().unwrap_or_else(|e| e.into_inner());
            run_cmd(Command::new("ip").args(["netns", "add", &node.ns]))?;
        }
        // Before any interface exists, because a new interface copies its IPv6 settings
        // from `default`: without DAD an address is usable at once, with no 1–2 s wait.
        for node in &self.nodes {
            let mut script = String::from(
                "ip link set lo up\n\
                 sysctl -qw net.ipv6.conf.all.accept_dad=0 net.ipv6.conf.default.accept_dad=0\n",
            );
            if node.kind == Kind::Switch {
                // A bridge and its ports need no addresses; this keeps their
                // router solicitations and MLD reports out of captures.
                script += "sysctl -qw net.ipv6.conf.all.disable_ipv6=1 \
                           net.ipv6.conf.default.disable_ipv6=1\n";
            }
            self.sh(&node.name, &script)?;
        }
        self.build_links()?;
        for node in self.nodes.clone() {
            let script = self.node_script(&node);
            if !script.is_empty() {
                self.sh(&node.name, &script)?;
            }
        }
        self.route_vips_via("lb1")?;

        for lb in self.load_balancers() {
            let path = self.bpffs(&lb);
            fs::create_dir_all(&path)?;
            mount_bpffs(&path)?;
            self.mounts.push(path);
        }
        // Before the HTTP servers, which bind their UDP sockets to the VIPs it holds.
        self.start_decaps()?;
        self.start_relays()?;
        self.start_httpds()
    }

    /// `vc5-vlan-relay` in the switch (br0's side to br10 and br20) and in every load
    /// balancer (`eth0` to its VLAN stand-ins).
    fn start_relays(&mut self) -> Result<()> {
        if self.opts.vlan_reals == 0 {
            return Ok(());
        }
        let mut at: Vec<(String, crate::vlan_relay::RelayOptions)> = vec![(
            "switch".into(),
            crate::vlan_relay::RelayOptions::new("trunk0", &[(10, "acc10"), (20, "acc20")]),
        )];
        for lb in self.load_balancers() {
            at.push((
                lb,
                crate::vlan_relay::RelayOptions::new("eth0", &[(10, "vlan10p"), (20, "vlan20p")]),
            ));
        }
        for (node, opts) in at {
            let relay = crate::vlan_relay::VlanRelay::start_in(&self.ns(&node), &opts)
                .with_context(|| format!("starting vc5-vlan-relay in {node}"))?;
            self.relays.insert(node, relay);
        }
        Ok(())
    }

    /// `vc5-decap` on every remote real: every method, the VIPs on its TUN device.
    fn start_decaps(&mut self) -> Result<()> {
        for remote in self.remote_reals() {
            let opts = crate::decap::DecapOptions {
                vips: self.vips().to_vec(),
                ..crate::decap::DecapOptions::all(FOU_PORT, GUE_PORT, &self.vips())
            };
            let decap = crate::decap::Decap::start_in(&self.ns(&remote), &opts)
                .with_context(|| format!("starting vc5-decap on {remote}"))?;
            self.decaps.insert(remote, decap);
        }
        Ok(())
    }

    /// The switch with its bridges, and every veth pair, each end created directly in its
    /// namespace so that none ever appears in the host's.
    fn build_links(&self) -> Result<()> {
        let mut sw = bridge("br0");
        let on_lan = self.nodes.iter().filter(|n| {
            !matches!(
                n.kind,
                Kind::Switch | Kind::Client | Kind::Remote | Kind::VlanReal
            )
        });
        for node in on_lan {
            sw += &bridge_port(
                &node.name,
                "eth0",
                Some(lan_mac(node.host)),
                Some(&node.ns),
                "br0",
            );
        }
        if self.opts.remote_reals > 0 {
            sw += &bridge("br1");
            sw += &bridge_port(
                "router3",
                "eth2",
                Some(remote_mac(1)),
                Some(&self.ns("router")),
                "br1",
            );
            for node in self.nodes.iter().filter(|n| n.kind == Kind::Remote) {
                let mac = Some(remote_mac(node.host));
                sw += &bridge_port(&node.name, "eth0", mac, Some(&node.ns), "br1");
            }
        }
        if self.opts.vlan_reals > 0 {
            sw += &self.vlan_links();
        }
        self.sh("switch", &sw)?;
        let client = self.node("client");
        self.sh(
            "router",
            &format!(
                "ip link add eth1 address {} type veth peer name eth0 address {} netns {}\n",
                vc5_xdp::netlink::format_mac(&client_net_mac(1)),
                vc5_xdp::netlink::format_mac(&client_net_mac(client.host)),
                client.ns,
            ),
        )?;
        Ok(())
    }

    /// The switch's side of the VLANs: bridges br10 and br20, the relay's trunk end on
    /// br0 and access ends on them, the router's legs and the VLAN reals' ports (each load
    /// balancer's stand-ins and relay side are its own, in `node_script`).
    fn vlan_links(&self) -> String {
        let mut sw = String::new();
        for v in VLANS {
            let br = format!("br{v}");
            sw += &bridge(&br);
            sw += &bridge_port(&format!("acc{v}p"), &format!("acc{v}"), None, None, &br);
            sw += &format!("ip link set acc{v} up\nethtool -K acc{v} tx off >/dev/null\n");
            let router = Some(self.ns("router"));
            let leg = Some(vlan_mac(v, 1));
            sw += &bridge_port(
                &format!("router-{v}"),
                &format!("vlan{v}"),
                leg,
                router.as_deref(),
                &br,
            );
        }
        sw += &bridge_port("trunkp", "trunk0", None, None, "br0");
        sw += "ip link set trunk0 up\nethtool -K trunk0 tx off >/dev/null\n";
        for node in self.nodes.iter().filter(|n| n.kind == Kind::VlanReal) {
            let v = vlan_of_host(node.host);
            let mac = Some(vlan_mac(v, node.host));
            sw += &bridge_port(&node.name, "eth0", mac, Some(&node.ns), &format!("br{v}"));
        }
        sw
    }

    /// Addresses, routes and sysctls of one node.
    fn node_script(&self, node: &Node) -> String {
        let mut s = String::new();
        if node.kind == Kind::Switch {
            return s;
        }
        let (v4, v6) = (self.addr4(&node.name), self.addr6(&node.name));
        let (gw4, gw6) = (self.addr4("router"), self.addr6("router"));
        match node.kind {
            Kind::Switch => {}
            Kind::Client => {
                let (gw4, gw6) = (client_net4(1), client_net6(1));
                s += &format!(
                    "{}ip route add default via {gw4}\nip -6 route add default via {gw6}\n",
                    iface("eth0", v4, v6),
                );
            }
            Kind::Router => {
                s += &iface("eth0", v4, v6);
                s += &iface("eth1", client_net4(1), client_net6(1));
                if self.opts.vlan_reals > 0 {
                    for v in VLANS {
                        s += &iface(&format!("vlan{v}"), vlan_net4(v, 1), vlan_net6(v, 1));
                    }
                    s += "sysctl -qw net.ipv4.conf.all.rp_filter=0 \
                          net.ipv4.conf.default.rp_filter=0\n";
                }
                if self.opts.remote_reals > 0 {
                    s += &iface("eth2", remote_net4(1), remote_net6(1));
                    // Replies of remote reals come from the VIPs, which the router routes
                    // to a load balancer: a reverse-path filter would drop them.
                    s += "sysctl -qw net.ipv4.conf.all.rp_filter=0 \
                          net.ipv4.conf.default.rp_filter=0 net.ipv4.conf.eth2.rp_filter=0\n";
                }
                // L4 hashing, so that ECMP over several load balancers spreads flows:
                // policy 3 (custom fields: addresses, protocol, ports) rather than 1,
                // because policy 1 reuses the hash a local socket gave its packets
                // (the client's random, and on retransmission changing, txhash, which
                // the veth keeps), while policy 3 always hashes the 5-tuple. So a flow
                // stays on its load balancer, and `router_next_hop` predicts which.
                s += "sysctl -qw net.ipv4.ip_forward=1 net.ipv6.conf.all.forwarding=1 \
                      net.ipv4.fib_multipath_hash_policy=3 net.ipv6.fib_multipath_hash_policy=3 \
                      net.ipv4.fib_multipath_hash_fields=0x37 \
                      net.ipv6.fib_multipath_hash_fields=0x37\n";
            }
            Kind::Lb => {
                s += &format!(
                    "{}ip route add default via {gw4}\nip -6 route add default via {gw6}\n",
                    iface("eth0", v4, v6),
                );
                if self.opts.vlan_reals > 0 {
                    // Stand-ins for eth0.10 and eth0.20: eth0's MAC, as 8021q gives
                    // them; their frames go tagged through eth0 by the relay.
                    let mac = vc5_xdp::netlink::format_mac(&lan_mac(node.host));
                    for v in VLANS {
                        s += &format!(
                            "ip link add vlan{v} address {mac} type veth peer name vlan{v}p\n\
                             ip link set vlan{v}p up\nethtool -K vlan{v}p tx off >/dev/null\n\
                             {}",
                            iface(
                                &format!("vlan{v}"),
                                vlan_net4(v, node.host),
                                vlan_net6(v, node.host)
                            ),
                        );
                    }
                }
            }
            Kind::Remote => {
                // No VIP on lo: vc5-decap puts them on its TUN device.
                let (gw4, gw6) = (remote_net4(1), remote_net6(1));
                s += &format!(
                    "{}ip route add default via {gw4}\nip -6 route add default via {gw6}\n",
                    iface("eth0", v4, v6),
                );
            }
            Kind::Real | Kind::VlanReal => {
                // A VLAN real's gateway is the router's leg on its VLAN.
                let (gw4, gw6) = match node.kind {
                    Kind::VlanReal => {
                        let v = vlan_of_host(node.host);
                        (vlan_net4(v, 1), vlan_net6(v, 1))
                    }
                    _ => (gw4, gw6),
                };
                // The VIP on lo makes the real accept the frames a load balancer sends it;
                // arp_ignore/arp_announce stop it answering ARP for the VIP or using the VIP
                // as an ARP source, which would steal the VIP from the load balancer.
                // rp_filter would drop client packets that arrive from a load balancer.
                // IPv6 needs nothing of the kind: Linux answers neighbour solicitations only
                // for addresses of the interface they arrive on.
                s += &format!(
                    "{}ip route add default via {gw4}\nip -6 route add default via {gw6}\n\
                     ip addr add {}/32 dev lo\nip -6 addr add {}/128 dev lo\n\
                     sysctl -qw net.ipv4.conf.all.arp_ignore=1 net.ipv4.conf.eth0.arp_ignore=1 \
                     net.ipv4.conf.all.arp_announce=2 net.ipv4.conf.eth0.arp_announce=2 \
                     net.ipv4.conf.all.rp_filter=0 net.ipv4.conf.default.rp_filter=0 \
                     net.ipv4.conf.eth0.rp_filter=0 net.ipv4.conf.lo.rp_filter=0\n",
                    iface("eth0", v4, v6),
                    self.vip4,
                    self.vip6,
                );
            }
        }
        s
    }
}
