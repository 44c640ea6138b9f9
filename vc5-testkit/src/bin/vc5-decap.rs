//! vc5-decap: a real's tunnel end in user space for the lab (the kernel has
//! no ipip, gre, fou or ip6_tunnel modules). Run it inside the real's
//! network namespace; see `vc5_testkit::decap`.
//!
//! ```text
//! vc5-decap --ipip --gre --fou 5555 --gue 6666 --tun vc5tun0 \
//!     --vip 192.0.2.80 --vip 2001:db8:80::80 --stats /tmp/decap.json
//! ```

use clap::Parser;
use std::net::IpAddr;
use std::path::PathBuf;
use vc5_testkit::decap::{self, DecapOptions};

/// Receives IPIP, GRE, FOU and GUE packets addressed to this host, strips
/// the outer headers and writes the inner packets into a TUN device that
/// holds the VIPs. Ends cleanly on SIGTERM or SIGINT, printing its counters.
#[derive(Parser, Debug)]
#[command(name = "vc5-decap")]
struct Args {
    /// Accept IPIP (IPv4 protocol 4 and 41, IPv6 next header 4 and 41).
    #[arg(long)]
    ipip: bool,
    /// Accept GRE (protocol 47, RFC 2784 header without options).
    #[arg(long)]
    gre: bool,
    /// Accept FOU on this UDP port (repeatable).
    #[arg(long, value_name = "PORT")]
    fou: Vec<u16>,
    /// Accept GUE (variant 0, no options) on this UDP port (repeatable).
    #[arg(long, value_name = "PORT")]
    gue: Vec<u16>,
    /// The TUN device to create.
    #[arg(long, default_value = "vc5tun0")]
    tun: String,
    /// An address (a VIP) to put on the TUN device (repeatable).
    #[arg(long, value_name = "ADDR")]
    vip: Vec<IpAddr>,
    /// Accept FOU and GUE over IPv6 with a zero UDP checksum (UDP_NO_CHECK6_RX).
    #[arg(long)]
    udp6_zero_checksum: bool,
    /// Write the counters here as JSON (when ready, and within 50 ms of a change).
    #[arg(long, value_name = "FILE")]
    stats: Option<PathBuf>,
}

fn main() {
    let a = Args::parse();
    let opts = DecapOptions {
        ipip: a.ipip,
        gre: a.gre,
        fou: a.fou,
        gue: a.gue,
        tun: a.tun,
        vips: a.vip,
        udp6_zero_checksum: a.udp6_zero_checksum,
        program: None,
    };
    match decap::run(&opts, a.stats.as_deref()) {
        Ok(stats) => println!("{}", stats.to_json()),
        Err(e) => {
            eprintln!("vc5-decap: {e}");
            std::process::exit(1);
        }
    }
}
