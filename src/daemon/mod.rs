//! The vc5d daemon: command line, start-up and the control loop.
//!
//! One task owns the data plane (`control::Control`). It is fed by
//! channels: the neighbour resolver (a thread, since netlink sockets are
//! blocking) reports each real's MAC as it is learnt or lost, the health
//! monitor reports each check's transitions, front ends (D-Bus, the
//! console) send commands, route health injection reports what it
//! announced, and signals ask for a reload or a stop. Every change runs the
//! rules once (`derive`: configuration, checks, MACs and drains in; real
//! modes, service states, announceable VIPs out), hands the data-plane
//! specs whole to [`DataPlane::program`](vc5_xdp::DataPlane::program), which writes only what differs,
//! publishes a [`Status`](crate::status::Status) built from the same derivation, and only then
//! reports the difference from the previous derivation as events.
//!
//! When flow sync is configured, a starting vc5d announces no VIP until
//! this host's vc5-flowsync reports (in the pinned `sync_status` map) that
//! it has learnt its peers' flows, or until `flow_sync_wait` has passed: a
//! load balancer that attracted connections before it knew them would send
//! established ones to the wrong real (`sync`).
//!
//! Stopping leaves the program attached and the maps pinned on purpose: a
//! restarted vc5d takes them over without breaking a connection. `rm -r`
//! of the `--bpffs` directory detaches everything.
//!
//! The modules: `args` (the command line), `serve` (start-up and the
//! control loop), `control` (the state it owns and how a change is
//! applied), `derive` (the rules, pure), `view` (the status snapshot),
//! `checks` (health checks' identity and view), `trouble` (holds for
//! this host's own trouble), `sync` (flow sync's hold and status),
//! `reload`.

mod args;
mod checks;
mod control;
mod derive;
mod probes;
mod reload;
mod serve;
mod sync;
mod trouble;
mod view;

pub use args::Args;
pub use serve::Channels;

use crate::config::{self, Config, Protocol};
use crate::logbuf::LogBuffer;
use anyhow::Result;
use std::time::{SystemTime, UNIX_EPOCH};

/// Runs vc5d to completion. `log` is the ring the tracing layer fills.
pub fn run(args: Args, log: LogBuffer) -> Result<()> {
    let cfg = config::load(&args.config).map_err(|e| anyhow::anyhow!("{e}"))?;
    if args.check {
        println!("{}", cfg.to_json());
        return Ok(());
    }
    file_limit(&cfg);
    let rt = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()?;
    rt.block_on(serve::serve(args, cfg, log))
}

/// Raises the file limit and says whether it fits the configuration: every
/// check may hold a socket at once, and running out would fail health checks
/// of healthy reals.
fn file_limit(cfg: &Config) {
    let checks: usize = cfg
        .services
        .iter()
        .map(|s| s.reals.len() * s.checks.len())
        .sum();
    let need = crate::limits::needed(checks, cfg.rhi.peers.len());
    match crate::limits::raise_nofile() {
        Ok(n) if n.soft < need => tracing::warn!(
            "open files limit {} (hard {}) is below the {need} this configuration may use \
             ({checks} checks): raise LimitNOFILE",
            n.soft,
            n.hard
        ),
        Ok(n) => tracing::info!("open files limit {} (was {}; {need} needed)", n.soft, n.was),
        Err(e) => tracing::warn!("cannot read the open files limit: {e}"),
    }
}
fn unix_ms(t: SystemTime) -> u64 {
    t.duration_since(UNIX_EPOCH)
        .map_or(0, |d| d.as_millis() as u64)
}

/// The protocol number the data plane keys services by.
fn proto_number(p: Protocol) -> u8 {
    match p {
        Protocol::Tcp => vc5_xdp::dataplane::TCP,
        Protocol::Udp => vc5_xdp::dataplane::UDP,
    }
}
