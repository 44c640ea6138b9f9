//! vc5's XDP data plane.
//!
//! - `bpf/` holds the eBPF C program; `build.rs` compiles it with clang and
//!   [`dataplane`] embeds, loads, attaches and pins it with aya.
//! - [`maps`] mirrors every map key and value `#[repr(C)]`.
//! - [`table`] builds each service's lookup table by weighted rendezvous
//!   hashing; [`hash`] reproduces the program's hashes.
//! - [`netlink`] finds each real's MAC in the kernel's neighbour table.
//! - [`testing`] has what tests and the benchmark share: a private bpffs
//!   and frame builders.

pub mod dataplane;
pub mod flowsync;
pub mod flowtable;
pub mod hash;
pub mod maps;
pub mod netlink;
pub mod sys;
pub mod table;
pub mod testing;

pub use dataplane::{DataPlane, Error, L2, MapSizes, RealMode, RealSpec, ServiceSpec, XdpMode};
