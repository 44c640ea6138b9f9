//! BIRD: the control-socket client, the include file and the driver that
//! keeps BIRD's configuration in line with the desired VIPs.
pub mod client;
pub mod driver;
pub mod include;
pub mod reply;
