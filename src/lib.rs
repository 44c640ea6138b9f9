//! vc5d, the vc5 load-balancer daemon, as a library: its configuration
//! ([`config`]), the daemon itself ([`daemon`]) and the network-namespace
//! lab that demonstrates and tests it ([`lab`]).

pub mod config;
pub mod console;
pub mod daemon;
pub mod dbus;
pub mod hold;
pub mod lab;
pub mod limits;
pub mod logbuf;
pub mod sdnotify;
pub mod status;
