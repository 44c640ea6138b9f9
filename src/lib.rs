//! vc5d, the vc5 load-balancer daemon, as a library: its configuration
//! ([`config`]) and the daemon itself ([`daemon`]). The network-namespace
//! lab that demonstrates and tests it is `vc5_testkit::lab` (the
//! unpublished `vc5-testkit` crate, with the `vc5-lab` binary).

pub mod config;
pub mod console;
pub mod daemon;
pub mod dbus;
pub mod hold;
pub mod limits;
pub mod logbuf;
pub mod sdnotify;
pub mod status;
