//! vc5-flowsync: shares this load balancer's flows with its peers over an
//! authenticated multicast group and writes theirs into the data plane's
//! peer tables (design.md §2.6; the logic is in `vc5_xdp::flowsync`).
//!
//! Exit status: 0 after SIGTERM/SIGINT, 2 when it cannot start (bad
//! configuration, key file, address or interface: the message says which),
//! 1 when the event loop fails.

use std::net::IpAddr;
use std::path::PathBuf;
use std::process::ExitCode;

use clap::Parser;
use vc5_xdp::flowsync::run::{self, Options};

/// Flow sync between vc5 load balancers: sends this host's new and
/// refreshed flows to the multicast group of the configuration's
/// `multicast` key, sealed with the first key of `flow_sync_key`, and
/// writes the peers' flows into the data plane's peer tables. SIGHUP
/// re-reads the key file; SIGTERM stops.
#[derive(Parser, Debug)]
#[command(name = "vc5-flowsync", version)]
struct Args {
    /// vc5d's configuration file (YAML or JSON); only `multicast`,
    /// `flow_sync_key`, `flow_sync_rate` and `flow_sync_resync_rate` are read.
    #[arg(long, value_name = "FILE")]
    config: PathBuf,
    /// The interface the group is joined and sent on.
    #[arg(long, value_name = "IF")]
    interface: String,
    /// This host's address on that interface (its sender id is derived from it).
    #[arg(long, value_name = "IP")]
    address: IpAddr,
    /// Where vc5d pins its maps.
    #[arg(long, value_name = "DIR", default_value = "/sys/fs/bpf/vc5")]
    bpffs: PathBuf,
}

fn main() -> ExitCode {
    let args = Args::parse();
    tracing_subscriber::fmt()
        .with_writer(std::io::stderr)
        .with_env_filter(
            tracing_subscriber::EnvFilter::try_from_default_env()
                .unwrap_or_else(|_| tracing_subscriber::EnvFilter::new("info")),
        )
        .init();
    let prepared = match run::prepare(Options {
        config: args.config,
        interface: args.interface,
        address: args.address,
        bpffs: args.bpffs,
    }) {
        Ok(p) => p,
        Err(e) => {
            eprintln!("vc5-flowsync: {e}");
            return ExitCode::from(2);
        }
    };
    match run::run(prepared) {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("vc5-flowsync: event loop: {e}");
            ExitCode::from(1)
        }
    }
}
