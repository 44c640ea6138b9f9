//! vc5's test kit: the scaffolding the workspace's integration tests,
//! benchmarks and lab share, kept out of the published crates so that their
//! libraries hold no test code. Unpublished; the other crates take it only as
//! a dev-dependency (their integration tests under `tests/` use it).
//!
//! - [`lab`]: the network-namespace lab (one client, a router, load
//!   balancers and reals on a bridge) that `vc5-lab` runs and the daemon's
//!   end-to-end tests build on.
//! - [`xdp`]: a private bpffs ([`xdp::TempBpffs`]), builders for the frames
//!   the packet tests send ([`xdp::Frame`]) and [`xdp::pin_to_cpu`].
//! - [`flowsync`]: two load balancers joined by a veth, each with its data
//!   plane and `vc5-flowsync` (the flow-sync tests and `vc5-flowsync-bench`).
//! - [`bird`]: network namespaces with BIRD, FRR and GoBGP in them (the route
//!   health injection tests and `vc5-rhi-bench`).
//! - [`decap`]: `vc5-decap`, a real's IPIP/GRE/FOU/GUE tunnel end in user
//!   space (the kernel has no tunnel modules), and [`decap::Decap`] to run
//!   it in a namespace and read its counters.
//! - [`vlan_relay`]: `vc5-vlan-relay`, an 802.1Q tagging relay in user
//!   space between a trunk and one access interface per VLAN (the kernel has
//!   no 8021q module, its bridges no vlan_filtering), and
//!   [`vlan_relay::VlanRelay`] to run it in a namespace.
//! - [`rng`]: the seedable generator (SplitMix64) the fuzz and flood tests
//!   draw from.
//!
//! Binaries: `vc5-lab` (the README's first command), `vc5-decap`,
//! `vc5-vlan-relay`, `vc5-bench`,
//! `vc5-flowsync-bench` (which runs the `vc5-flowsync` beside it, so build
//! the whole workspace) and `vc5-rhi-bench`.
//!
//! Almost everything here needs root; [`require_root`] makes a test say so
//! instead of failing obscurely. [`enter_netns`] moves a thread into a
//! namespace (the one copy of what the tests' namespace threads do first).

pub mod bird;
pub mod decap;
pub mod flowsync;
pub mod lab;
pub mod netns;
pub mod rng;
pub mod tool;
pub mod vlan_relay;
pub mod xdp;

/// Moves the calling thread (only it: `setns(2)` is per thread) into the
/// network namespace `ns`, a name under /run/netns; panics if it cannot.
/// Sockets the thread opens afterwards live in that namespace.
pub fn enter_netns(ns: &str) {
    use std::os::fd::AsRawFd;
    let f = std::fs::File::open(format!("/run/netns/{ns}"))
        .unwrap_or_else(|e| panic!("open netns {ns}: {e}"));
    // SAFETY: setns on a namespace descriptor we own; it changes only this thread.
    let rc = unsafe { libc::setns(f.as_raw_fd(), libc::CLONE_NEWNET) };
    assert_eq!(rc, 0, "setns {ns}: {}", std::io::Error::last_os_error());
}

/// Fails the calling test loudly unless it runs as root: tests that need
/// BPF, namespaces or daemons on privileged ports must fail, not skip.
pub fn require_root() {
    // SAFETY: geteuid has no preconditions and cannot fail.
    let euid = unsafe { libc::geteuid() };
    assert_eq!(
        euid, 0,
        "this test needs root (BPF, network namespaces, daemons on port 179): run it as root"
    );
}
