//! vc5d's command line.

use clap::Parser;
use std::net::{IpAddr, SocketAddr};
use std::path::PathBuf;
use vc5_xdp::XdpMode;

/// vc5d: a layer-2 Direct Server Return load balancer on XDP.
#[derive(Debug, Parser)]
#[command(version, about, long_about = None)]
pub struct Args {
    /// Configuration file: YAML (the original vc5 schema) or JSON.
    #[arg(long, value_name = "FILE")]
    pub config: PathBuf,
    /// Interface to attach the XDP program to; repeat for several.
    #[arg(
        long = "interface",
        value_name = "IF",
        required_unless_present = "check"
    )]
    pub interfaces: Vec<String>,
    /// This host's address on the LAN: health-check source, BGP router id
    /// and next hop.
    #[arg(long, value_name = "IP", required_unless_present = "check")]
    pub address: Option<IpAddr>,
    /// auto tries native XDP and falls back to generic with a warning.
    #[arg(long, value_name = "MODE", default_value = "auto")]
    pub xdp_mode: XdpMode,
    /// BIRD's control socket, through which VIPs are announced.
    #[arg(long, value_name = "PATH", default_value = "/run/bird/bird.ctl")]
    pub bird_socket: PathBuf,
    /// The file vc5d writes for BIRD to include.
    #[arg(long, value_name = "PATH", default_value = "/run/vc5/bird-vips.conf")]
    pub bird_include: PathBuf,
    /// Where the D-Bus service is exposed: system, session, none or an address.
    #[arg(long, value_name = "BUS", default_value = "system")]
    pub dbus: String,
    /// Address of the HTML console, JSON status and Prometheus metrics.
    #[arg(long, value_name = "ADDR:PORT", default_value = "127.0.0.1:8080")]
    pub console: SocketAddr,
    /// bpffs directory where programs, links and maps are pinned.
    #[arg(long, value_name = "DIR", default_value = "/sys/fs/bpf/vc5")]
    pub bpffs: PathBuf,
    /// Validate the configuration, print it normalised as JSON and exit.
    #[arg(long)]
    pub check: bool,
}
