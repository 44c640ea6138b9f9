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
//! ```
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
const HTTPD_PY: &str = include_str!("../../lab/httpd.py");

/// BIRD configurations of `bird-examples/`, used as they are but for their
/// `define` placeholders, the include path and the log.
const BIRD_ROUTER_CONF: &str = include_str!("../../bird-examples/router.conf");
const BIRD_LB_CONF: &str = include_str!("../../bird-examples/lb.conf");

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
    /// Numbers the log files of `spawn`.
    spawned: AtomicUsize,
}

/// A process started in a lab namespace. Killed (SIGKILL) and reaped when dropped; use
/// [`LabChild::terminate`] for a graceful stop. Derefs to [`std::process::Child`].
#[derive(Debug)]
pub struct LabChild {
    child: Child,
    /// Where its stdout and stderr go, if to a file.
    pub log: Option<PathBuf>,
}

impl LabChild {
    /// Wraps a spawned child so that it cannot outlive its owner.
    pub fn new(child: Child, log: Option<PathBuf>) -> Self {
        LabChild { child, log }
    }

    /// Sends `signal` (e.g. `libc::SIGHUP`) unless the process has already been reaped.
    pub fn signal(&mut self, signal: libc::c_int) -> Result<()> {
        if self.child.try_wait()?.is_some() {
            bail!("process {} has already exited", self.child.id());
        }
        let pid = libc::pid_t::try_from(self.child.id())?;
        // SAFETY: kill(2) has no memory effects; the pid is our unreaped child, so it
        // cannot have been reused by another process.
        if unsafe { libc::kill(pid, signal) } != 0 {
            return Err(std::io::Error::last_os_error().into());
        }
        Ok(())
    }

    /// SIGTERM, then SIGKILL if it is still running after `grace`; returns how it ended.
    pub fn terminate(&mut self, grace: Duration) -> Result<ExitStatus> {
        if let Some(status) = self.child.try_wait()? {
            return Ok(status);
        }
        self.signal(libc::SIGTERM)?;
        let deadline = Instant::now() + grace;
        while Instant::now() < deadline {
            if let Some(status) = self.child.try_wait()? {
                return Ok(status);
            }
            std::thread::sleep(Duration::from_millis(20));
        }
        self.child.kill()?;
        Ok(self.child.wait()?)
    }

    /// The log's content so far (empty if there is none yet).
    pub fn log_text(&self) -> String {
        self.log
            .as_deref()
            .and_then(|p| fs::read(p).ok())
            .map(|b| String::from_utf8_lossy(&b).into_owned())
            .unwrap_or_default()
    }
}

impl std::ops::Deref for LabChild {
    type Target = Child;
    fn deref(&self) -> &Child {
        &self.child
    }
}

impl std::ops::DerefMut for LabChild {
    fn deref_mut(&mut self) -> &mut Child {
        &mut self.child
    }
}

impl Drop for LabChild {
    fn drop(&mut self) {
        if let Ok(None) = self.child.try_wait() {
            let _ = self.child.kill();
        }
        let _ = self.child.wait();
    }
}

impl Lab {
    /// Builds a lab: namespaces, links, addresses, routes (VIPs via `lb1`), and an HTTP
    /// server on every real, answering before this returns. Fails if not root.
    pub fn new(opts: LabOptions) -> Result<Lab> {
        require_root()?;
        ensure!(
            (1..=9).contains(&opts.load_balancers) && (1..=9).contains(&opts.reals),
            "a lab has 1 to 9 load balancers and 1 to 9 reals"
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
        let mut lab = Lab {
            id,
            vip4: Ipv4Addr::new(192, 0, 2, 80),
            vip6: Ipv6Addr::new(0x2001, 0xdb8, 0x80, 0, 0, 0, 0, 0x80),
            dir: lab_dir(pid, n),
            nodes,
            opts,
            mounts: Vec::new(),
            children: std::collections::BTreeMap::new(),
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
        self.start_httpds()
    }

    /// The switch with its bridge, and every veth pair, each end created directly in its
    /// namespace so that none ever appears in the host's.
    fn build_links(&self) -> Result<()> {
        let mut sw = String::from(
            "ip link add br0 type bridge stp_state 0 mcast_snooping 0\nip link set br0 up\n",
        );
        let on_lan = self.nodes.iter();
        for node in on_lan.filter(|n| !matches!(n.kind, Kind::Switch | Kind::Client)) {
            sw += &format!(
                "ip link add {port} type veth peer name eth0 address {mac} netns {ns}\n\
                 ip link set {port} master br0 up\n\
                 ethtool -K {port} tx off >/dev/null\n",
                port = node.name,
                mac = vc5_xdp::netlink::format_mac(&lan_mac(node.host)),
                ns = node.ns,
            );
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
            }
            Kind::Real => {
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

    fn start_httpds(&mut self) -> Result<()> {
        for real in self.reals() {
            self.spawn_httpd(&real)?;
        }
        let targets: Vec<SocketAddr> = self
            .reals()
            .iter()
            .flat_map(|r| self.httpd_addrs(r))
            .collect();
        // Asked from the router, so this also proves the LAN works in both families.
        self.wait_httpd(&targets)
    }

    fn spawn_httpd(&mut self, real: &str) -> Result<()> {
        let python = python()?;
        let script = self.dir.join("httpd.py");
        let log = self.httpd_log(real);
        let mut cmd = self.command(real, &[]);
        cmd.arg(&python).arg("-u").arg(&script).args([
            "--name",
            real,
            "--port",
            &HTTP_PORT.to_string(),
            "--udp-port",
            &UDP_PORT.to_string(),
            "--vip",
            &self.vip4.to_string(),
            "--vip",
            &self.vip6.to_string(),
        ]);
        let child = spawn_logged(cmd, &log)?;
        self.children.insert(real.to_string(), child);
        Ok(())
    }

    fn httpd_addrs(&self, real: &str) -> [SocketAddr; 2] {
        [
            SocketAddr::new(self.addr4(real).into(), HTTP_PORT),
            SocketAddr::new(self.addr6(real).into(), HTTP_PORT),
        ]
    }

    fn wait_httpd(&self, targets: &[SocketAddr]) -> Result<()> {
        self.run_in("router", || {
            for t in targets {
                retry(Duration::from_secs(10), || {
                    http_get(*t, "/health", Duration::from_secs(1))
                })
                .with_context(|| format!("httpd on {t} does not answer"))?;
            }
            Ok::<_, anyhow::Error>(())
        })?
    }

    /// Stops a real's HTTP server (SIGKILL): its port then refuses connections.
    pub fn stop_httpd(&mut self, real: &str) -> Result<()> {
        let mut child = self
            .children
            .remove(real)
            .with_context(|| format!("{real} runs no httpd"))?;
        child.kill()?;
        child.wait()?;
        Ok(())
    }

    /// Starts a real's HTTP server again and waits until it answers.
    pub fn start_httpd(&mut self, real: &str) -> Result<()> {
        ensure!(
            !self.children.contains_key(real),
            "{real} already runs its httpd"
        );
        self.spawn_httpd(real)?;
        self.wait_httpd(&self.httpd_addrs(real))
    }

    // ---- names and addresses ------------------------------------------------------------

    fn node(&self, name: &str) -> &Node {
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

    fn names_of(&self, kind: Kind) -> Vec<String> {
        let nodes = self.nodes.iter().filter(|n| n.kind == kind);
        nodes.map(|n| n.name.clone()).collect()
    }

    /// A node's IPv4 address on `eth0`: the client's on the client network, everyone
    /// else's on the LAN (the router's LAN side for `router`).
    pub fn addr4(&self, name: &str) -> Ipv4Addr {
        let node = self.node(name);
        match node.kind {
            Kind::Client => client_net4(node.host),
            Kind::Switch => panic!("the switch has no address"),
            _ => Ipv4Addr::new(203, 0, 113, node.host),
        }
    }

    /// A node's IPv6 address on `eth0`, as [`Lab::addr4`].
    pub fn addr6(&self, name: &str) -> Ipv6Addr {
        let node = self.node(name);
        match node.kind {
            Kind::Client => client_net6(node.host),
            Kind::Switch => panic!("the switch has no address"),
            _ => Ipv6Addr::new(0x2001, 0xdb8, 2, 0, 0, 0, 0, hex_like(node.host)),
        }
    }

    /// The MAC address of a node's `eth0` (fixed, so captures are easy to read).
    pub fn mac(&self, name: &str) -> [u8; 6] {
        let node = self.node(name);
        match node.kind {
            Kind::Client => client_net_mac(node.host),
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

    // ---- running things -------------------------------------------------------------------

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

    // ---- routing and XDP ------------------------------------------------------------------

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

    // ---- vc5d -----------------------------------------------------------------------------

    /// A vc5d configuration for this lab: one HTTP service on port 80 for each VIP, the
    /// reals (their IPv4 LAN addresses; in L2 DSR only their MACs matter) as one group.
    pub fn default_config(&self) -> String {
        self.config_for_reals(&self.reals())
    }

    /// [`Lab::default_config`] with only these reals in the group (e.g. three of a lab's
    /// four, to add the fourth later with a reload).
    pub fn config_for_reals(&self, reals: &[String]) -> String {
        let reals: Vec<String> = reals.iter().map(|r| self.addr4(r).to_string()).collect();
        format!(
            "# vc5d configuration for lab {id}\n\
             services:\n\
             \x20 - name: web4\n\
             \x20   desc: lab web service over IPv4\n\
             \x20   addr: {vip4}\n\
             \x20   port: {HTTP_PORT}\n\
             \x20   real: web\n\
             \x20   need: 1\n\
             \x20   checks:\n\
             \x20     - {{name: health, type: http, port: {HTTP_PORT}, path: /health}}\n\
             \x20 - name: web6\n\
             \x20   desc: lab web service over IPv6\n\
             \x20   addr: \"{vip6}\"\n\
             \x20   port: {HTTP_PORT}\n\
             \x20   real: web\n\
             \x20   need: 1\n\
             \x20   checks:\n\
             \x20     - {{name: health, type: http, port: {HTTP_PORT}, path: /health}}\n\
             reals:\n\
             \x20 web: [{reals}]\n",
            id = self.id,
            vip4 = self.vip4,
            vip6 = self.vip6,
            reals = reals.join(", "),
        )
    }

    /// [`Lab::config_for_reals`] plus a UDP service on each VIP ([`UDP_PORT`], `udp4` and
    /// `udp6`, with a tcp check on the same port).
    pub fn config_with_udp(&self, reals: &[String]) -> String {
        let mut udp = String::new();
        for (name, vip) in [
            ("udp4", self.vip4.to_string()),
            ("udp6", self.vip6.to_string()),
        ] {
            udp += &format!(
                "\x20 - name: {name}\n\
                 \x20   desc: lab UDP answer service\n\
                 \x20   addr: \"{vip}\"\n\
                 \x20   port: {UDP_PORT}\n\
                 \x20   protocol: udp\n\
                 \x20   real: web\n\
                 \x20   checks:\n\
                 \x20     - {{name: tcp, type: tcp, port: {UDP_PORT}, interval: 1s, timeout: 500ms}}\n"
            );
        }
        self.config_for_reals(reals)
            .replacen("reals:\n", &format!("{udp}reals:\n"), 1)
    }

    /// Where a load balancer's own configuration goes, if it has one
    /// (`start_vc5d` prefers it to the shared [`Lab::config_path`]).
    pub fn config_path_for(&self, lb: &str) -> PathBuf {
        self.dir.join(format!("vc5d-{lb}.yaml"))
    }

    /// [`Lab::default_config`] with route health injection for one load
    /// balancer: BGP to the router (the built-in speaker, used when no
    /// BIRD runs beside vc5d), IPv6 VIPs with the load balancer's IPv6
    /// address as next hop.
    pub fn rhi_config(&self, lb: &str) -> String {
        format!("{}{}", self.default_config(), self.rhi_section(lb))
    }

    /// The `rhi:` section of [`Lab::rhi_config`], to append to a configuration of one's own.
    pub fn rhi_section(&self, lb: &str) -> String {
        format!(
            "rhi:\n  as_number: {LB_ASN}\n  peers: [{}]\n  hold_time: 9\n  next_hop6: \"{}\"\n",
            self.addr4("router"),
            self.addr6(lb)
        )
    }

    /// The configuration a load balancer's vc5d and vc5-flowsync read: its own
    /// ([`Lab::config_path_for`]) if written, else the shared [`Lab::config_path`].
    pub fn config_of(&self, lb: &str) -> PathBuf {
        let own = self.config_path_for(lb);
        if own.exists() {
            own
        } else {
            self.config_path()
        }
    }

    /// Writes a load balancer's own configuration (see `config_path_for`).
    pub fn write_config_for(&self, lb: &str, yaml: &str) -> Result<PathBuf> {
        let path = self.config_path_for(lb);
        let tmp = self.dir.join(format!(".vc5d-{lb}.yaml.tmp"));
        fs::write(&tmp, yaml)?;
        fs::rename(&tmp, &path)?;
        Ok(path)
    }

    // ---- BIRD --------------------------------------------------------------------------

    /// Runs BIRD on the router with `bird-examples/router.conf`: a BGP session to every
    /// load balancer, VIPs installed with ECMP. Replaces the static VIP routes.
    pub fn start_router_bird(&self) -> Result<LabChild> {
        let mut conf = BIRD_ROUTER_CONF.to_string();
        conf = define(&conf, "ROUTER_ADDRESS", &self.addr4("router").to_string());
        conf = define(&conf, "ROUTER_ASN", &ROUTER_ASN.to_string());
        conf = define(&conf, "LB_ASN", &LB_ASN.to_string());
        conf = define(&conf, "VIPS4", &format!("[ {}/32 ]", self.vip4));
        conf = define(&conf, "VIPS6", &format!("[ {}/128 ]", self.vip6));
        let lbs = self.load_balancers();
        for (i, name) in ["LB1", "LB2"].iter().enumerate() {
            match lbs.get(i) {
                Some(lb) => conf = define(&conf, name, &self.addr4(lb).to_string()),
                None => {
                    // No such load balancer: no session for it.
                    let proto = format!("protocol bgp lb{} ", i + 1);
                    conf = conf
                        .lines()
                        .filter(|l| {
                            !l.starts_with(&proto) && !l.starts_with(&format!("define {name}"))
                        })
                        .map(|l| format!("{l}\n"))
                        .collect();
                }
            }
        }
        self.sh(
            "router",
            &format!(
                "ip route del {}/32 || true\nip -6 route del {}/128 || true\n",
                self.vip4, self.vip6
            ),
        )?;
        self.start_bird("router", &conf)
    }

    /// Runs BIRD on a load balancer with `bird-examples/lb.conf`: it includes the file
    /// vc5d maintains (the lab's `--bird-include`) and announces its VIPs to the router;
    /// vc5d drives it over the lab's `--bird-socket`.
    pub fn start_lb_bird(&self, lb: &str) -> Result<LabChild> {
        let include = self.dir.join(format!("{lb}-bird-vips.conf"));
        if !include.exists() {
            // BIRD refuses to start without its include; vc5d rewrites it.
            fs::write(&include, "")?;
        }
        let mut conf = BIRD_LB_CONF.replace("/run/vc5/bird-vips.conf", &include.to_string_lossy());
        conf = define(&conf, "LB_ADDRESS", &self.addr4(lb).to_string());
        conf = define(&conf, "LB_ADDRESS6", &self.addr6(lb).to_string());
        conf = define(&conf, "LB_ASN", &LB_ASN.to_string());
        conf = define(&conf, "ROUTER1", &self.addr4("router").to_string());
        conf = define(&conf, "ROUTER_ASN", &ROUTER_ASN.to_string());
        conf = conf
            .lines()
            .filter(|l| !l.starts_with("protocol bgp router2 ") && !l.starts_with("define ROUTER2"))
            .map(|l| format!("{l}\n"))
            .collect();
        self.start_bird(lb, &conf)
    }

    /// BIRD's control socket in a node (the lab's `--bird-socket` for a load balancer).
    pub fn bird_socket(&self, name: &str) -> PathBuf {
        self.dir.join(format!("{name}-bird.ctl"))
    }

    fn start_bird(&self, name: &str, conf: &str) -> Result<LabChild> {
        let log = self.dir.join(format!("{name}-bird.log"));
        let conf = conf.replace(
            "log syslog all;",
            &format!("log \"{}\" all;", log.display()),
        );
        let path = self.dir.join(format!("{name}-bird.conf"));
        fs::write(&path, conf)?;
        let sock = self.bird_socket(name);
        let _ = fs::remove_file(&sock);
        let (p, s) = (path.to_string_lossy(), sock.to_string_lossy());
        self.run(name, &["bird", "-p", "-c", &p])
            .with_context(|| format!("{} does not parse", path.display()))?;
        let child = self.spawn(name, &["bird", "-f", "-c", &p, "-s", &s])?;
        retry(Duration::from_secs(10), || {
            self.birdc(name, "show status").map(|_| ())
        })
        .with_context(|| format!("BIRD on {name} does not answer"))?;
        Ok(child)
    }

    /// `birdc -s <socket> <command>` for the BIRD of a node.
    pub fn birdc(&self, name: &str, command: &str) -> Result<String> {
        let sock = self.bird_socket(name);
        let mut argv = vec!["birdc", "-s"];
        let s = sock.to_string_lossy();
        argv.push(&s);
        argv.extend(command.split_whitespace());
        self.run(name, &argv)
    }

    /// Writes [`Lab::default_config`] to [`Lab::config_path`].
    pub fn write_config(&self) -> Result<PathBuf> {
        self.write_config_text(&self.default_config())
    }

    /// Writes a configuration of the caller's to [`Lab::config_path`] (atomically, so a
    /// vc5d reloading on SIGHUP never reads half of it).
    pub fn write_config_text(&self, yaml: &str) -> Result<PathBuf> {
        let path = self.config_path();
        let tmp = self.dir.join(".vc5d.yaml.tmp");
        fs::write(&tmp, yaml)?;
        fs::rename(&tmp, &path)?;
        Ok(path)
    }

    /// The vc5d binary `start_vc5d` runs.
    pub fn vc5d_path(&self) -> Result<PathBuf> {
        if let Some(p) = &self.opts.vc5d {
            return Ok(p.clone());
        }
        if let Some(p) = std::env::var_os("VC5D") {
            return Ok(p.into());
        }
        let exe = std::env::current_exe()?;
        let dir = exe.parent().context("executable has no directory")?;
        // Test binaries live in target/<profile>/deps/, vc5d one level up.
        for d in [Some(dir), dir.parent()].into_iter().flatten() {
            let p = d.join("vc5d");
            if p.is_file() {
                return Ok(p);
            }
        }
        bail!(
            "no vc5d beside {} (build it with `cargo build --bin vc5d`, or set $VC5D)",
            exe.display()
        )
    }

    /// Starts vc5d in a load balancer's namespace:
    /// `vc5d --config <config_path> --interface eth0 --address <lb's LAN IPv4>
    /// --xdp-mode <mode> --bpffs <bpffs(lb)> --dbus none --bird-socket <dir>/<lb>-bird.ctl
    /// --bird-include <dir>/<lb>-bird-vips.conf <extra…>`, output appended to
    /// [`Lab::vc5d_log`]. The configuration is [`Lab::write_config`]'s unless one was
    /// written already. `--dbus`, `--bird-socket` and `--bird-include` in `extra` replace
    /// the lab's; those defaults keep the lab's vc5d off the host's bus, BIRD and /run/vc5.
    /// Its console keeps its default address, which is private to the namespace:
    /// `lab.curl(lb, "http://127.0.0.1:8080/metrics", &[])` reads it.
    pub fn start_vc5d(&self, lb: &str, xdp_mode: &str, extra: &[&str]) -> Result<LabChild> {
        let vc5d = self.vc5d_path()?;
        ensure!(vc5d.is_file(), "vc5d not found at {}", vc5d.display());
        if !self.config_path().exists() {
            self.write_config()?;
        }
        let config = self.config_of(lb);
        let path = |p: PathBuf| p.to_string_lossy().into_owned();
        let mut args: Vec<String> = vec![
            "--config".into(),
            path(config),
            "--interface".into(),
            "eth0".into(),
            "--address".into(),
            self.addr4(lb).to_string(),
            "--xdp-mode".into(),
            xdp_mode.into(),
            "--bpffs".into(),
            path(self.bpffs(lb)),
        ];
        let defaults = [
            ("--dbus", "none".to_string()),
            (
                "--bird-socket",
                path(self.dir.join(format!("{lb}-bird.ctl"))),
            ),
            (
                "--bird-include",
                path(self.dir.join(format!("{lb}-bird-vips.conf"))),
            ),
        ];
        for (flag, value) in defaults {
            let given = |a: &&str| **a == *flag || a.starts_with(&format!("{flag}="));
            if !extra.iter().any(given) {
                args.push(flag.into());
                args.push(value);
            }
        }
        args.extend(extra.iter().map(|s| s.to_string()));

        let log = self.vc5d_log(lb);
        let mut f = OpenOptions::new().create(true).append(true).open(&log)?;
        writeln!(f, "=== {} {}", vc5d.display(), args.join(" "))?;
        let mut cmd = self.command(lb, &[]);
        cmd.arg(&vc5d).args(&args);
        spawn_logged(cmd, &log)
    }

    // ---- flow sync ------------------------------------------------------------------------

    /// The lab's flow-sync key file (`flow_sync_key`): one key, ID 1, 32 random bytes in
    /// the `ID HEX` format, mode 0600 (vc5-flowsync refuses a file others can read).
    /// Written on the first call; every load balancer of the lab shares it.
    pub fn flow_sync_key(&self) -> Result<PathBuf> {
        let path = self.dir.join("flow-sync.key");
        if path.exists() {
            return Ok(path);
        }
        let mut key = [0u8; 32];
        File::open("/dev/urandom")?.read_exact(&mut key)?;
        let hex: String = key.iter().map(|b| format!("{b:02x}")).collect();
        let mut f = OpenOptions::new()
            .write(true)
            .create_new(true)
            .mode(0o600)
            .open(&path)
            .with_context(|| format!("creating {}", path.display()))?;
        writeln!(f, "# vc5 lab {}: flow-sync key (ID HEX)\n1 {hex}", self.id)?;
        Ok(path)
    }

    /// A configuration with flow sync turned on: `multicast` ([`FLOW_SYNC_GROUP`], on the
    /// LAN) and `flow_sync_key` (the lab's [`Lab::flow_sync_key`]) appended.
    pub fn with_flow_sync(&self, yaml: &str) -> Result<String> {
        let key = self.flow_sync_key()?;
        Ok(format!(
            "{yaml}multicast: {FLOW_SYNC_GROUP}\nflow_sync_key: {}\n",
            key.display()
        ))
    }

    /// The vc5-flowsync binary [`Lab::start_flowsync`] runs: `LabOptions::vc5_flowsync`,
    /// else `$VC5_FLOWSYNC`, else the `vc5-flowsync` beside vc5d (cargo builds both into
    /// `target/<profile>/`).
    pub fn flowsync_path(&self) -> Result<PathBuf> {
        if let Some(p) = &self.opts.vc5_flowsync {
            return Ok(p.clone());
        }
        if let Some(p) = std::env::var_os("VC5_FLOWSYNC") {
            return Ok(p.into());
        }
        let vc5d = self.vc5d_path()?;
        let p = vc5d.with_file_name("vc5-flowsync");
        ensure!(
            p.is_file(),
            "no vc5-flowsync beside {} (build it with `cargo build -p vc5-xdp --bin \
             vc5-flowsync`, or set $VC5_FLOWSYNC)",
            vc5d.display()
        );
        Ok(p)
    }

    /// Where [`Lab::start_flowsync`] sends a load balancer's vc5-flowsync output (appended
    /// across restarts, each start preceded by a `=== ` line with its command).
    pub fn flowsync_log(&self, lb: &str) -> PathBuf {
        self.dir.join(format!("vc5-flowsync-{lb}.log"))
    }

    /// Starts vc5-flowsync in a load balancer's namespace: `vc5-flowsync --config
    /// <config_of(lb)> --interface eth0 --address <lb's LAN IPv4> --bpffs <bpffs(lb)>`,
    /// output appended to [`Lab::flowsync_log`]. It waits for vc5d's pinned maps itself,
    /// so it may start before or after vc5d.
    pub fn start_flowsync(&self, lb: &str) -> Result<LabChild> {
        let bin = self.flowsync_path()?;
        let path = |p: PathBuf| p.to_string_lossy().into_owned();
        let args = [
            "--config".to_string(),
            path(self.config_of(lb)),
            "--interface".into(),
            "eth0".into(),
            "--address".into(),
            self.addr4(lb).to_string(),
            "--bpffs".into(),
            path(self.bpffs(lb)),
        ];
        let log = self.flowsync_log(lb);
        let mut f = OpenOptions::new().create(true).append(true).open(&log)?;
        writeln!(f, "=== {} {}", bin.display(), args.join(" "))?;
        let mut cmd = self.command(lb, &[]);
        cmd.arg(&bin).args(args);
        spawn_logged(cmd, &log)
    }

    // ---- predictions ----------------------------------------------------------------------

    /// The real vc5's lookup table sends a new flow to, among `reals` (all healthy, weight
    /// 1, as in [`Lab::config_for_reals`]): computed with the data plane's own hash
    /// (`vc5_xdp::hash::flow_hash`) and table builder (`vc5_xdp::table`), so a test can
    /// pick client ports whose flows move, or stay, when a real is added.
    pub fn predicted_real(
        &self,
        reals: &[String],
        client: SocketAddr,
        vip: SocketAddr,
        proto: u8,
    ) -> String {
        let weighted: Vec<(String, u32)> = reals.iter().map(|r| (r.clone(), 1)).collect();
        self.predicted_real_weighted(&weighted, client, vip, proto)
    }

    /// [`Lab::predicted_real`] with a weight for each real.
    pub fn predicted_real_weighted(
        &self,
        reals: &[(String, u32)],
        client: SocketAddr,
        vip: SocketAddr,
        proto: u8,
    ) -> String {
        use vc5_xdp::maps::{TABLE_SIZE, addr16};
        use vc5_xdp::table::{Candidate, build, service_seed};
        let candidates: Vec<Candidate> = (reals.iter().enumerate())
            .map(|(i, (r, weight))| Candidate {
                addr: self.addr4(r).into(),
                weight: *weight,
                backend: i as u16,
            })
            .collect();
        let table = build(service_seed(vip.ip(), vip.port(), proto), &candidates);
        let h = vc5_xdp::hash::flow_hash(
            &addr16(client.ip()),
            &addr16(vip.ip()),
            client.port().to_be(),
            vip.port().to_be(),
            proto,
        );
        let bucket = h as usize & (TABLE_SIZE - 1);
        reals[usize::from(table.backend[bucket])].0.clone()
    }

    /// The node the router forwards a flow from the client to (its multipath route's
    /// choice for this 5-tuple, as `ip route get` computes it), e.g. `lb1`.
    pub fn router_next_hop(
        &self,
        client: SocketAddr,
        vip: SocketAddr,
        proto: &str,
    ) -> Result<String> {
        let out = self.run(
            "router",
            &[
                "ip",
                "route",
                "get",
                &vip.ip().to_string(),
                "from",
                &client.ip().to_string(),
                "iif",
                "eth1",
                "ipproto",
                proto,
                "sport",
                &client.port().to_string(),
                "dport",
                &vip.port().to_string(),
            ],
        )?;
        let via = (out.split_whitespace())
            .skip_while(|w| *w != "via")
            .nth(1)
            .with_context(|| format!("no next hop in {out:?}"))?;
        let via: IpAddr = via.parse()?;
        (self.nodes.iter())
            .filter(|n| !matches!(n.kind, Kind::Switch | Kind::Client))
            .find(|n| via == IpAddr::from(self.addr4(&n.name)) || via == self.addr6(&n.name))
            .map(|n| n.name.clone())
            .with_context(|| format!("next hop {via} is no node of the lab"))
    }

    // ---- long downloads -------------------------------------------------------------------

    /// Starts a download of `/bytes/<bytes>` from the client through a VIP with curl, sent
    /// by the real at `rate` bytes per second at most (0: as fast as it goes; the lab's
    /// httpd paces it, since curl's `--limit-rate` averages over seconds and lets a veth
    /// deliver megabytes at once), from client port
    /// `local_port` when given (so that its 4-tuple, hence its load balancer and real, is
    /// known in advance). The body goes to a file in the lab directory, the headers (with
    /// the real's `X-Real`) to another as soon as they arrive.
    pub fn start_transfer(
        &self,
        vip: IpAddr,
        bytes: usize,
        rate: u64,
        local_port: Option<u16>,
    ) -> Result<Transfer> {
        let n = self.spawned.fetch_add(1, Ordering::Relaxed);
        let headers = self.dir.join(format!("transfer-{n}.headers"));
        let output = self.dir.join(format!("transfer-{n}.body"));
        let url = Lab::url(vip, &format!("/bytes/{bytes}?rate={rate}"));
        let (h, o) = (headers.to_string_lossy(), output.to_string_lossy());
        let port = local_port.map(|p| p.to_string());
        let mut argv = vec![
            "curl",
            "-sS",
            "--fail",
            "-D",
            &h,
            "-o",
            &o,
            "-w",
            "%{size_download}",
        ];
        if let Some(p) = &port {
            argv.extend(["--local-port", p]);
        }
        argv.push(&url);
        let curl = self.spawn("client", &argv)?;
        Ok(Transfer {
            curl,
            headers,
            output,
            bytes,
            url,
        })
    }

    /// The SHA-256 of `/bytes/<bytes>` as the reals serve it, fetched straight from
    /// `real` (from the router, bypassing the load balancers).
    pub fn reference_sha256(&self, real: &str, bytes: usize) -> Result<String> {
        let out = self.dir.join(format!("reference-{bytes}.body"));
        let url = Lab::url(self.addr4(real).into(), &format!("/bytes/{bytes}"));
        let o = out.to_string_lossy();
        self.curl("router", &url, &["-o", &o, "--max-time", "30"])?;
        sha256_file(&out)
    }

    // ---- forwarding into a namespace ------------------------------------------------------

    /// Makes `target` inside a node's namespace reachable from the host at `local` (e.g.
    /// `127.0.0.1:8081`; port 0 picks a free one): a thread accepts on the host's side
    /// and, for each connection, a thread that has entered the namespace connects to
    /// `target` and copies both ways. Nothing is created on the host but the listening
    /// socket; dropping the [`Forward`] closes it and ends its connections.
    pub fn forward(&self, name: &str, target: SocketAddr, local: SocketAddr) -> Result<Forward> {
        let listener = std::net::TcpListener::bind(local)
            .with_context(|| format!("listening on {local} for {name}'s {target}"))?;
        listener.set_nonblocking(true)?;
        let local = listener.local_addr()?;
        let ns = Path::new(NETNS_DIR).join(self.ns(name));
        let stop = std::sync::Arc::new(std::sync::atomic::AtomicBool::new(false));
        let stopping = stop.clone();
        let thread = std::thread::Builder::new()
            .name(format!("forward-{name}"))
            .spawn(move || accept_loop(listener, ns, target, stopping))?;
        Ok(Forward {
            local,
            stop,
            thread: Some(thread),
        })
    }

    /// [`Lab::forward`] for a load balancer's vc5d console (`127.0.0.1:8080` in its
    /// namespace, vc5d's default `--console`) to `127.0.0.1:<port>` on the host, falling
    /// back to a free port when `port` is taken. The URL is `Forward::url`.
    pub fn forward_console(&self, lb: &str, port: u16) -> Result<Forward> {
        let target = SocketAddr::from(([127, 0, 0, 1], 8080));
        let at = |p: u16| SocketAddr::from(([127, 0, 0, 1], p));
        self.forward(lb, target, at(port))
            .or_else(|_| self.forward(lb, target, at(0)))
    }

    // ---- teardown -------------------------------------------------------------------------

    /// Removes the labs of processes that no longer exist (killed before their `Lab` was
    /// dropped). Best effort: errors are reported on stderr. Labs of live processes,
    /// including this one's, are left alone.
    pub fn cleanup_stale() {
        let mut stale: HashSet<(u32, u32)> = HashSet::new();
        let names = fs::read_dir(NETNS_DIR).into_iter().flatten().flatten();
        for name in names.map(|e| e.file_name().to_string_lossy().into_owned()) {
            if let Some(key) = parse_id(name.strip_prefix("v5-").unwrap_or("")) {
                stale.insert(key);
            }
        }
        let dirs = fs::read_dir("/run").into_iter().flatten().flatten();
        for name in dirs.map(|e| e.file_name().to_string_lossy().into_owned()) {
            if let Some(key) = parse_id(name.strip_prefix("vc5-lab-").unwrap_or("")) {
                stale.insert(key);
            }
        }
        for (pid, n) in stale {
            if !Path::new(&format!("/proc/{pid}")).exists() {
                remove_lab(&format!("v5-{pid}-{n}"), &lab_dir(pid, n));
            }
        }
    }
}

/// A download started by [`Lab::start_transfer`]. Killed if dropped unfinished.
pub struct Transfer {
    curl: LabChild,
    /// Where curl writes the response headers.
    pub headers: PathBuf,
    /// Where curl writes the body.
    pub output: PathBuf,
    /// The size asked for.
    pub bytes: usize,
    pub url: String,
}

/// How a [`Transfer`] ended.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct TransferEnd {
    /// curl exited 0.
    pub ok: bool,
    /// Bytes received.
    pub received: u64,
    /// SHA-256 of what was received, hexadecimal.
    pub sha256: String,
    /// curl's stderr and `-w` output (its complaint when it failed).
    pub curl_said: String,
}

impl Transfer {
    /// The real serving it (the `X-Real` header), once its headers have arrived.
    pub fn real(&self, timeout: Duration) -> Result<String> {
        retry(timeout, || {
            let h = fs::read_to_string(&self.headers).unwrap_or_default();
            h.lines()
                .find_map(|l| {
                    let (k, v) = l.split_once(':')?;
                    k.eq_ignore_ascii_case("x-real")
                        .then(|| v.trim().to_string())
                })
                .with_context(|| format!("no answer yet for {}", self.url))
        })
    }

    /// Bytes received so far.
    pub fn received(&self) -> u64 {
        fs::metadata(&self.output).map_or(0, |m| m.len())
    }

    /// Whether curl is still running.
    pub fn running(&mut self) -> bool {
        matches!(self.curl.try_wait(), Ok(None))
    }

    /// Waits for curl to exit (killing it after `timeout`) and describes the result.
    pub fn finish(mut self, timeout: Duration) -> Result<TransferEnd> {
        let deadline = Instant::now() + timeout;
        let status = loop {
            if let Some(s) = self.curl.try_wait()? {
                break s;
            }
            if Instant::now() > deadline {
                self.curl.kill()?;
                break self.curl.wait()?;
            }
            std::thread::sleep(Duration::from_millis(50));
        };
        Ok(TransferEnd {
            ok: status.success(),
            received: self.received(),
            sha256: if self.output.exists() {
                sha256_file(&self.output)?
            } else {
                String::new()
            },
            curl_said: self.curl.log_text().trim().to_string(),
        })
    }
}

/// `sha256sum FILE`'s hash.
pub fn sha256_file(path: &Path) -> Result<String> {
    let out = run_cmd(Command::new("sha256sum").arg(path))?;
    Ok(out
        .split_whitespace()
        .next()
        .unwrap_or_default()
        .to_string())
}

/// A TCP port on the host forwarding into a lab namespace (see [`Lab::forward`]).
pub struct Forward {
    /// Where it listens on the host.
    pub local: SocketAddr,
    stop: std::sync::Arc<std::sync::atomic::AtomicBool>,
    thread: Option<std::thread::JoinHandle<()>>,
}

impl Forward {
    /// `http://<local>/`.
    pub fn url(&self) -> String {
        format!("http://{}/", self.local)
    }
}

impl Drop for Forward {
    fn drop(&mut self) {
        self.stop.store(true, Ordering::SeqCst);
        if let Some(t) = self.thread.take() {
            let _ = t.join();
        }
    }
}

/// How often the forwarding threads look at their stop flag.
const FORWARD_POLL: Duration = Duration::from_millis(100);

fn accept_loop(
    listener: std::net::TcpListener,
    ns: PathBuf,
    target: SocketAddr,
    stop: std::sync::Arc<std::sync::atomic::AtomicBool>,
) {
    while !stop.load(Ordering::SeqCst) {
        match listener.accept() {
            Ok((outer, _)) => {
                let (ns, stop) = (ns.clone(), stop.clone());
                let _ = std::thread::Builder::new()
                    .name("forward-conn".into())
                    .spawn(move || {
                        if let Err(e) = forward_one(outer, &ns, target, &stop) {
                            tracing::debug!("forwarding to {target}: {e:#}");
                        }
                    });
            }
            Err(e) if e.kind() == std::io::ErrorKind::WouldBlock => {
                std::thread::sleep(FORWARD_POLL)
            }
            Err(_) => std::thread::sleep(FORWARD_POLL),
        }
    }
}

/// One forwarded connection: this thread enters the namespace (sockets belong to the
/// namespace they are created in, so only the connect needs it), then copies in both
/// directions until either side closes or the forward is dropped.
fn forward_one(
    outer: TcpStream,
    ns: &Path,
    target: SocketAddr,
    stop: &std::sync::atomic::AtomicBool,
) -> Result<()> {
    outer.set_nonblocking(false)?;
    let f = File::open(ns).with_context(|| format!("{}", ns.display()))?;
    // SAFETY: setns(2) on a descriptor we own; it changes only this thread.
    if unsafe { libc::setns(f.as_raw_fd(), libc::CLONE_NEWNET) } != 0 {
        return Err(std::io::Error::last_os_error().into());
    }
    let inner = TcpStream::connect_timeout(&target, Duration::from_secs(2))?;
    for s in [&outer, &inner] {
        s.set_read_timeout(Some(FORWARD_POLL))?;
        s.set_nodelay(true)?;
    }
    std::thread::scope(|sc| {
        let (o2, i2) = (outer.try_clone()?, inner.try_clone()?);
        sc.spawn(move || copy_until(i2, o2, stop));
        copy_until(outer.try_clone()?, inner.try_clone()?, stop);
        Ok::<_, anyhow::Error>(())
    })?;
    Ok(())
}

/// Copies `from` to `to` until EOF, an error or `stop`; then shuts both down so that the
/// other direction ends too.
fn copy_until(mut from: TcpStream, mut to: TcpStream, stop: &std::sync::atomic::AtomicBool) {
    let mut buf = [0u8; 16 * 1024];
    while !stop.load(Ordering::SeqCst) {
        match from.read(&mut buf) {
            Ok(0) => break,
            Ok(n) => {
                if to.write_all(&buf[..n]).is_err() {
                    break;
                }
            }
            Err(e)
                if matches!(
                    e.kind(),
                    std::io::ErrorKind::WouldBlock
                        | std::io::ErrorKind::TimedOut
                        | std::io::ErrorKind::Interrupted
                ) => {}
            Err(_) => break,
        }
    }
    let _ = to.shutdown(std::net::Shutdown::Write);
    let _ = from.shutdown(std::net::Shutdown::Read);
}

impl Drop for Lab {
    fn drop(&mut self) {
        self.children.clear();
        let namespaces: Vec<String> = self.nodes.iter().map(|n| n.ns.clone()).collect();
        teardown(&namespaces, &self.mounts, &self.dir, self.opts.keep_dir);
    }
}

/// Everything `Drop` does, also for stale labs: kill, unmount, delete, remove.
fn teardown(namespaces: &[String], mounts: &[PathBuf], dir: &Path, keep_dir: bool) {
    let existing: Vec<&String> = namespaces
        .iter()
        .filter(|ns| Path::new(NETNS_DIR).join(ns).exists())
        .collect();
    // Processes keep a namespace (and any pinned program) alive after `ip netns del`.
    for ns in &existing {
        kill_all_in(ns);
    }
    for m in mounts {
        unmount(m);
    }
    for ns in &existing {
        if let Err(e) = run_cmd(Command::new("ip").args(["netns", "del", ns])) {
            eprintln!("vc5 lab: deleting namespace {ns}: {e:#}");
        }
    }
    if !keep_dir
        && dir.exists()
        && let Err(e) = fs::remove_dir_all(dir)
    {
        eprintln!("vc5 lab: removing {}: {e}", dir.display());
    }
}

fn remove_lab(id: &str, dir: &Path) {
    let prefix = format!("{id}-");
    let namespaces: Vec<String> = fs::read_dir(NETNS_DIR)
        .into_iter()
        .flatten()
        .flatten()
        .map(|e| e.file_name().to_string_lossy().into_owned())
        .filter(|n| n.starts_with(&prefix))
        .collect();
    let mounts = mounts_under(dir);
    if namespaces.is_empty() && mounts.is_empty() && !dir.exists() {
        return;
    }
    eprintln!("vc5 lab: removing stale lab {id}");
    teardown(&namespaces, &mounts, dir, false);
}

/// SIGKILLs every process in a namespace until none is left (bounded).
fn kill_all_in(ns: &str) {
    let deadline = Instant::now() + Duration::from_secs(5);
    loop {
        let pids = Command::new("ip")
            .args(["netns", "pids", ns])
            .stdin(Stdio::null())
            .output()
            .map(|o| String::from_utf8_lossy(&o.stdout).into_owned())
            .unwrap_or_default();
        let pids: Vec<libc::pid_t> = pids.split_whitespace().flat_map(str::parse).collect();
        if pids.is_empty() {
            return;
        }
        if Instant::now() > deadline {
            eprintln!("vc5 lab: processes {pids:?} in {ns} survive SIGKILL");
            return;
        }
        for pid in pids {
            // SAFETY: kill(2) has no memory effects. The pid was just listed as living in
            // one of the lab's namespaces, so it is one of the lab's processes.
            unsafe { libc::kill(pid, libc::SIGKILL) };
        }
        std::thread::sleep(Duration::from_millis(20));
    }
}

fn mount_bpffs(path: &Path) -> Result<()> {
    let target = CString::new(path.as_os_str().as_encoded_bytes())?;
    // SAFETY: all pointers are valid NUL-terminated strings for the duration of the call.
    let rc = unsafe {
        libc::mount(
            c"bpf".as_ptr(),
            target.as_ptr(),
            c"bpf".as_ptr(),
            0,
            std::ptr::null(),
        )
    };
    if rc != 0 {
        let e = std::io::Error::last_os_error();
        bail!("mounting bpffs on {}: {e}", path.display());
    }
    Ok(())
}

fn unmount(path: &Path) {
    let Ok(target) = CString::new(path.as_os_str().as_encoded_bytes()) else {
        return;
    };
    // SAFETY: a valid NUL-terminated path. A mount still busy (a process in another mount
    // namespace holding it) is detached instead, which frees it when that process ends.
    let rc = unsafe {
        if libc::umount2(target.as_ptr(), 0) == 0 {
            0
        } else {
            libc::umount2(target.as_ptr(), libc::MNT_DETACH)
        }
    };
    if rc != 0 {
        let e = std::io::Error::last_os_error();
        if e.raw_os_error() != Some(libc::EINVAL) {
            eprintln!("vc5 lab: unmounting {}: {e}", path.display());
        }
    }
}

/// Mount points at or below `dir`, deepest first.
fn mounts_under(dir: &Path) -> Vec<PathBuf> {
    let text = fs::read_to_string("/proc/self/mounts").unwrap_or_default();
    let mut found: Vec<PathBuf> = text
        .lines()
        .filter_map(|l| l.split_whitespace().nth(1))
        .map(PathBuf::from)
        .filter(|p| p.starts_with(dir))
        .collect();
    found.sort();
    found.reverse();
    found
}

// ---- helpers ------------------------------------------------------------------------------

fn require_root() -> Result<()> {
    // SAFETY: geteuid(2) cannot fail and has no memory effects.
    let euid = unsafe { libc::geteuid() };
    ensure!(
        euid == 0,
        "the vc5 lab needs root (namespaces, veths, bpffs)"
    );
    Ok(())
}

fn lab_dir(pid: u32, n: u32) -> PathBuf {
    PathBuf::from(format!("/run/vc5-lab-{pid}-{n}"))
}

/// `<pid>-<n>` followed by nothing or `-<anything>`.
fn parse_id(s: &str) -> Option<(u32, u32)> {
    let mut parts = s.splitn(3, '-');
    let pid = parts.next()?.parse().ok()?;
    let n = parts.next()?.parse().ok()?;
    Some((pid, n))
}

fn node(id: &str, name: &str, kind: Kind, host: u8) -> Node {
    Node {
        name: name.to_string(),
        ns: format!("{id}-{name}"),
        kind,
        host,
    }
}

fn client_net4(host: u8) -> Ipv4Addr {
    Ipv4Addr::new(198, 51, 100, host)
}

fn client_net6(host: u8) -> Ipv6Addr {
    Ipv6Addr::new(0x2001, 0xdb8, 1, 0, 0, 0, 0, hex_like(host))
}

fn lan_mac(host: u8) -> [u8; 6] {
    [0x02, 0xc5, 0, 2, 0, host]
}

fn client_net_mac(host: u8) -> [u8; 6] {
    [0x02, 0xc5, 0, 1, 0, host]
}

/// 21 → 0x21, so that `203.0.113.21` is `2001:db8:2::21`.
fn hex_like(host: u8) -> u16 {
    u16::from_str_radix(&host.to_string(), 16).expect("decimal digits are hex digits")
}

/// Lines that configure one interface: TX checksum offload off (see the module docs),
/// addresses (IPv6 without DAD), up.
fn iface(dev: &str, v4: Ipv4Addr, v6: Ipv6Addr) -> String {
    let len6 = 64;
    format!(
        "ethtool -K {dev} tx off >/dev/null\n\
         ip addr add {v4}/24 dev {dev}\n\
         ip -6 addr add {v6}/{len6} dev {dev} nodad\n\
         ip link set {dev} up\n"
    )
}

fn find_program(candidates: &[&str]) -> Result<PathBuf> {
    let path = std::env::var_os("PATH").unwrap_or_default();
    for c in candidates {
        let p = Path::new(c);
        if p.is_absolute() {
            if p.is_file() {
                return Ok(p.to_path_buf());
            }
            continue;
        }
        for dir in std::env::split_paths(&path) {
            let full = dir.join(c);
            let executable = fs::metadata(&full).is_ok_and(|m| m.permissions().mode() & 0o111 != 0);
            if executable {
                return Ok(full);
            }
        }
    }
    bail!("none of {candidates:?} found")
}

/// Debian's python3 first: a version manager's shim (pyenv) adds a shell script and a
/// noticeable delay to every start, and is not what lab/deps installs.
fn python() -> Result<PathBuf> {
    find_program(&["/usr/bin/python3", "python3"]).context("python3 is missing: run lab/deps")
}

fn run_cmd(cmd: &mut Command) -> Result<String> {
    let out = cmd
        .stdin(Stdio::null())
        .output()
        .with_context(|| format!("running {cmd:?}"))?;
    if !out.status.success() {
        bail!(
            "{cmd:?} failed ({}): {}",
            out.status,
            String::from_utf8_lossy(&out.stderr).trim_end()
        );
    }
    Ok(String::from_utf8_lossy(&out.stdout).into_owned())
}

fn spawn_logged(mut cmd: Command, log: &Path) -> Result<LabChild> {
    let out = OpenOptions::new().create(true).append(true).open(log)?;
    let err = out.try_clone()?;
    let child = cmd
        .stdout(out)
        .stderr(err)
        .spawn()
        .with_context(|| format!("starting {cmd:?}"))?;
    Ok(LabChild::new(child, Some(log.to_path_buf())))
}

/// Compiles a BPF C source with clang into `out`.
pub fn compile_bpf(source: &str, out: &Path) -> Result<()> {
    compile_bpf_with(source, out, &[])
}

/// [`compile_bpf`] with extra clang arguments (e.g. `-DNAME=VALUE`).
pub fn compile_bpf_with(source: &str, out: &Path, extra: &[String]) -> Result<()> {
    let clang = find_program(&["clang-19", "clang"]).context("clang is missing: run lab/deps")?;
    let src = out.with_extension("c");
    fs::write(&src, source)?;
    let mut cmd = Command::new(clang);
    cmd.args([
        "-O2",
        "-g",
        "-target",
        "bpf",
        "-I/usr/include/x86_64-linux-gnu",
    ])
    .args(extra)
    .arg("-c")
    .arg(&src)
    .arg("-o")
    .arg(out);
    run_cmd(&mut cmd)?;
    Ok(())
}

/// Replaces the value of `define NAME = …;` in a BIRD configuration.
fn define(conf: &str, name: &str, value: &str) -> String {
    conf.lines()
        .map(|l| {
            let t = l.trim_start();
            if t.starts_with(&format!("define {name} "))
                || t.starts_with(&format!("define {name}="))
            {
                format!("define {name} = {value};\n")
            } else {
                format!("{l}\n")
            }
        })
        .collect()
}

/// Calls `f` until it succeeds or `timeout` has passed (then returns its last error),
/// pausing 100 ms between calls.
pub fn retry<T>(timeout: Duration, mut f: impl FnMut() -> Result<T>) -> Result<T> {
    let deadline = Instant::now() + timeout;
    loop {
        match f() {
            Ok(v) => return Ok(v),
            Err(e) if Instant::now() >= deadline => return Err(e),
            Err(_) => std::thread::sleep(Duration::from_millis(100)),
        }
    }
}

/// A minimal HTTP/1.0 GET over a new TCP connection from the calling thread's network
/// namespace (see [`Lab::run_in`]); the body of a 200 answer, or an error. Cheaper than
/// curl when a test or the demo makes hundreds of requests.
pub fn http_get(addr: SocketAddr, path: &str, timeout: Duration) -> Result<String> {
    let mut s = TcpStream::connect_timeout(&addr, timeout).with_context(|| format!("{addr}"))?;
    s.set_read_timeout(Some(timeout))?;
    s.set_write_timeout(Some(timeout))?;
    write!(s, "GET {path} HTTP/1.0\r\nHost: {addr}\r\n\r\n")?;
    let mut buf = Vec::new();
    s.read_to_end(&mut buf).with_context(|| format!("{addr}"))?;
    let text = String::from_utf8_lossy(&buf);
    let (head, body) = text
        .split_once("\r\n\r\n")
        .context("no end of HTTP headers")?;
    let status = head.split_whitespace().nth(1).unwrap_or_default();
    ensure!(status == "200", "{addr}{path}: HTTP status {status}");
    Ok(body.to_string())
}

#[cfg(test)]
mod tests {
    use super::*;

    fn lab() -> Lab {
        crate::require_root();
        Lab::new(LabOptions::default()).expect("building the lab")
    }

    /// `real=… client=… vip=…` as a map.
    fn fields(body: &str) -> std::collections::HashMap<String, String> {
        body.split_whitespace()
            .filter_map(|kv| kv.split_once('='))
            .map(|(k, v)| (k.to_string(), v.to_string()))
            .collect()
    }

    fn assert_answers(lab: &Lab, real: &str) {
        for (vip, client) in [
            (IpAddr::from(lab.vip4), IpAddr::from(lab.addr4("client"))),
            (lab.vip6.into(), lab.addr6("client").into()),
        ] {
            let body = lab.curl("client", &Lab::url(vip, "/"), &[]).unwrap();
            let f = fields(&body);
            assert_eq!(f["real"], real, "{vip}: {body}");
            assert_eq!(f["client"], client.to_string(), "{vip}: {body}");
            assert_eq!(f["vip"], vip.to_string(), "{vip}: {body}");
        }
    }

    #[test]
    fn lab_routes_to_a_real_directly() {
        let lab = lab();
        lab.route_vips_via("real1").unwrap();
        assert_answers(&lab, "real1");

        // The in-process client sees the same, and large answers arrive whole.
        let vip6 = SocketAddr::new(lab.vip6.into(), HTTP_PORT);
        let got = lab.run_in("client", || {
            http_get(vip6, "/bytes/1000000", Duration::from_secs(5))
        });
        assert_eq!(got.unwrap().unwrap().len(), 1_000_000);

        // Without a route to a real, nothing on the LAN answers for the VIP: lb1 (with no
        // XDP program) must not, or tests of the load balancer would prove nothing.
        lab.route_vips_via("lb1").unwrap();
        let url = Lab::url(lab.vip4.into(), "/");
        assert!(lab.curl("client", &url, &["--max-time", "1"]).is_err());

        let log = fs::read_to_string(lab.httpd_log("real1")).unwrap();
        assert!(log.contains("GET / "), "httpd log: {log}");
    }

    #[test]
    fn lab_drop_removes_everything() {
        let lab = lab();
        let namespaces: Vec<String> = lab.names().iter().map(|n| lab.ns(n)).collect();
        let dir = lab.dir().to_path_buf();
        let bpffs = lab.bpffs("lb1");
        let mounted = || fs::read_to_string("/proc/self/mounts").unwrap();
        assert!(mounted().contains(&format!(" {} bpf ", bpffs.display())));
        // A process the caller forgot about must not keep a namespace alive.
        let stray = lab.spawn("real2", &["sleep", "600"]).unwrap();
        let stray_pid = stray.id();
        std::mem::forget(stray);

        drop(lab);

        for ns in &namespaces {
            assert!(!Path::new(NETNS_DIR).join(ns).exists(), "{ns} still exists");
        }
        assert!(
            !mounted().contains(&dir.display().to_string()),
            "bpffs still mounted"
        );
        assert!(!dir.exists(), "{} still exists", dir.display());
        let mut status = 0;
        // SAFETY: reaping our own child; status is a valid out-pointer.
        let reaped = unsafe { libc::waitpid(stray_pid as libc::pid_t, &mut status, 0) };
        assert_eq!(reaped, stray_pid as libc::pid_t);
        assert!(libc::WIFSIGNALED(status), "stray process was not killed");
    }

    #[test]
    fn lab_with_two_load_balancers_spreads_over_reals_by_ecmp() {
        crate::require_root();
        let lab = Lab::new(LabOptions {
            load_balancers: 2,
            ..LabOptions::default()
        })
        .unwrap();
        assert_eq!(lab.load_balancers(), ["lb1", "lb2"]);
        assert_eq!(lab.addr6("lb2").to_string(), "2001:db8:2::12");
        assert!(lab.bpffs("lb2").is_dir());
        let reals = lab.reals();
        let reals: Vec<&str> = reals.iter().map(String::as_str).collect();
        lab.route_vips_ecmp(&reals).unwrap();
        let vip = SocketAddr::new(lab.vip4.into(), HTTP_PORT);
        let seen: HashSet<String> = lab
            .run_in("client", || {
                (0..60)
                    .map(|_| {
                        fields(&http_get(vip, "/", Duration::from_secs(2)).unwrap())["real"].clone()
                    })
                    .collect()
            })
            .unwrap();
        assert_eq!(seen.len(), 3, "60 flows hashed onto {seen:?} only");
    }

    /// An XDP program that does what vc5's does for one real: frames for a VIP get the
    /// real's MAC as destination and go back out of the interface they came in on.
    const TO_REAL_C: &str = r#"
#include <linux/bpf.h>
#include <linux/if_ether.h>
#include <linux/ip.h>
#include <linux/ipv6.h>
#include <bpf/bpf_helpers.h>
#include <bpf/bpf_endian.h>

SEC("xdp")
int to_real(struct xdp_md *ctx)
{
	void *data = (void *)(long)ctx->data, *end = (void *)(long)ctx->data_end;
	struct ethhdr *eth = data;
	unsigned char real[ETH_ALEN] = { REAL_MAC };

	if ((void *)(eth + 1) > end)
		return XDP_PASS;
	if (eth->h_proto == bpf_htons(ETH_P_IP)) {
		struct iphdr *ip = (void *)(eth + 1);
		if ((void *)(ip + 1) > end || ip->daddr != VIP4)
			return XDP_PASS;
	} else if (eth->h_proto == bpf_htons(ETH_P_IPV6)) {
		struct ipv6hdr *ip6 = (void *)(eth + 1);
		if ((void *)(ip6 + 1) > end || ip6->daddr.in6_u.u6_addr32[0] != VIP6_0 ||
		    ip6->daddr.in6_u.u6_addr32[1] != VIP6_1 ||
		    ip6->daddr.in6_u.u6_addr32[2] != VIP6_2 ||
		    ip6->daddr.in6_u.u6_addr32[3] != VIP6_3)
			return XDP_PASS;
	} else {
		return XDP_PASS;
	}
	__builtin_memcpy(eth->h_source, eth->h_dest, ETH_ALEN);
	__builtin_memcpy(eth->h_dest, real, ETH_ALEN);
	return XDP_TX;
}

char _license[] SEC("license") = "GPL";
"#;

    /// Attaches `TO_REAL_C` (sending VIP traffic to real2) to lb1 in `mode` and checks that
    /// the client's requests, and a large answer, get through.
    fn xdp_tx_reaches_a_real(mode: &str) {
        let lab = lab();
        if mode == "xdpdrv" {
            lab.prepare_native_xdp().unwrap();
            assert_eq!(
                lab.xdp_mode("switch", "lb1").unwrap().as_deref(),
                Some("xdp")
            );
        }
        let word = |b: &[u8]| format!("{:#x}", u32::from_ne_bytes(b.try_into().unwrap()));
        let mac = lab.mac("real2").map(|b| format!("{b:#x}")).join(",");
        let v6 = lab.vip6.octets();
        let defs = vec![
            format!("-DREAL_MAC={mac}"),
            format!("-DVIP4={}", word(&lab.vip4.octets())),
            format!("-DVIP6_0={}", word(&v6[0..4])),
            format!("-DVIP6_1={}", word(&v6[4..8])),
            format!("-DVIP6_2={}", word(&v6[8..12])),
            format!("-DVIP6_3={}", word(&v6[12..16])),
        ];
        let obj = lab.dir().join("to-real.o");
        compile_bpf_with(TO_REAL_C, &obj, &defs).unwrap();
        let obj = obj.to_str().unwrap();
        lab.run(
            "lb1",
            &[
                "ip", "link", "set", "dev", "eth0", mode, "obj", obj, "sec", "xdp",
            ],
        )
        .unwrap();
        let want = if mode == "xdpdrv" {
            "xdp"
        } else {
            "xdpgeneric"
        };
        assert_eq!(lab.xdp_mode("lb1", "eth0").unwrap().as_deref(), Some(want));

        assert_answers(&lab, "real2");
        for vip in lab.vips() {
            let url = Lab::url(vip, "/bytes/3000000");
            let out = lab.curl(
                "client",
                &url,
                &["-o", "/dev/null", "-w", "%{size_download}"],
            );
            assert_eq!(out.unwrap(), "3000000", "{url}");
        }
    }

    #[test]
    fn lab_native_xdp_tx_reaches_a_real() {
        xdp_tx_reaches_a_real("xdpdrv");
    }

    #[test]
    fn lab_generic_xdp_tx_reaches_a_real() {
        xdp_tx_reaches_a_real("xdpgeneric");
    }

    #[test]
    fn lab_forwards_a_port_from_the_host_into_a_namespace() {
        let lab = lab();
        // real1's httpd listens on [::]:80, so on 127.0.0.1:80 inside real1 only.
        let target = SocketAddr::from(([127, 0, 0, 1], HTTP_PORT));
        let fwd = lab
            .forward("real1", target, SocketAddr::from(([127, 0, 0, 1], 0)))
            .unwrap();
        assert!(fwd.url().starts_with("http://127.0.0.1:"), "{}", fwd.url());
        let body = http_get(fwd.local, "/", Duration::from_secs(5)).unwrap();
        assert!(body.starts_with("real=real1 client=127.0.0.1 "), "{body}");
        // Large answers arrive whole, several connections at once.
        std::thread::scope(|s| {
            let gets: Vec<_> = (0..4)
                .map(|_| s.spawn(|| http_get(fwd.local, "/bytes/3000000", Duration::from_secs(10))))
                .collect();
            for g in gets {
                assert_eq!(g.join().unwrap().unwrap().len(), 3_000_000);
            }
        });
        let local = fwd.local;
        drop(fwd);
        assert!(
            TcpStream::connect_timeout(&local, Duration::from_secs(1)).is_err(),
            "{local} still accepts after the forward was dropped"
        );
    }

    #[test]
    fn lab_flow_sync_key_is_private_and_well_formed() {
        let lab = lab();
        let key = lab.flow_sync_key().unwrap();
        assert_eq!(lab.flow_sync_key().unwrap(), key, "written once");
        let mode = fs::metadata(&key).unwrap().permissions().mode() & 0o777;
        assert_eq!(mode, 0o600);
        let text = fs::read_to_string(&key).unwrap();
        let lines: Vec<&str> = (text.lines())
            .filter(|l| !l.trim_start().starts_with('#'))
            .collect();
        assert_eq!(lines.len(), 1, "{text}");
        let (id, hex) = lines[0].split_once(' ').unwrap();
        assert_eq!(id, "1");
        assert_eq!(hex.len(), 64);
        assert!(hex.bytes().all(|b| b.is_ascii_hexdigit()), "{hex}");
        let yaml = lab.with_flow_sync(&lab.default_config()).unwrap();
        assert!(
            yaml.contains(&format!("\nmulticast: {FLOW_SYNC_GROUP}\n")),
            "{yaml}"
        );
        assert!(yaml.contains(&format!("\nflow_sync_key: {}\n", key.display())));
    }

    #[test]
    fn lab_reals_answer_udp_from_the_vip() {
        let lab = lab();
        lab.route_vips_via("real3").unwrap();
        for vip in lab.vips() {
            let target = SocketAddr::new(vip, UDP_PORT);
            let body = lab
                .run_in("client", || {
                    let any: SocketAddr = match vip {
                        IpAddr::V4(_) => ([0, 0, 0, 0], 0).into(),
                        IpAddr::V6(_) => (Ipv6Addr::UNSPECIFIED, 0).into(),
                    };
                    let s = std::net::UdpSocket::bind(any).unwrap();
                    // connect(): only answers from the VIP itself are received.
                    s.connect(target).unwrap();
                    s.set_read_timeout(Some(Duration::from_secs(2))).unwrap();
                    s.send(b"17").unwrap();
                    let mut buf = [0u8; 256];
                    let n = s.recv(&mut buf).unwrap();
                    String::from_utf8_lossy(&buf[..n]).into_owned()
                })
                .unwrap();
            let f = fields(&body);
            assert_eq!(f["real"], "real3", "{body}");
            assert_eq!(f["vip"], vip.to_string(), "{body}");
            assert_eq!(f["seq"], "17", "{body}");
        }
    }

    #[test]
    fn parse_ids() {
        assert_eq!(parse_id("123-4-client"), Some((123, 4)));
        assert_eq!(parse_id("123-4"), Some((123, 4)));
        assert_eq!(parse_id("123"), None);
        assert_eq!(parse_id("x-4"), None);
        assert_eq!(hex_like(21), 0x21);
    }
}
