//! vc5's XDP data plane.
//!
//! - `bpf/` holds the eBPF C program; `build.rs` compiles it with clang and
//!   [`dataplane`] embeds, loads, attaches and pins it with aya.
//! - [`maps`] mirrors every map key and value `#[repr(C)]`.
//! - [`table`] builds each service's lookup table by weighted rendezvous
//!   hashing; [`hash`] reproduces the program's hashes.
//! - [`netlink`] finds each real's MAC in the kernel's neighbour table.
//!
//! The tests' and benchmarks' scaffolding (a private bpffs, frame builders,
//! the two-load-balancer flow-sync set-up) lives in the unpublished
//! `vc5-testkit` crate, as do `vc5-bench` and `vc5-flowsync-bench`.

pub mod dataplane;
pub mod flowsync;
pub mod flowtable;
pub mod hash;
pub mod maps;
pub mod netlink;
pub mod sys;
pub mod table;

pub use dataplane::{
    DataPlane, Error, Forward, L2, MapSizes, RealMode, RealSpec, ServiceSpec, XdpMode,
};
