//! vc5-vlan-relay: an 802.1Q tagging relay in user space for the lab (the
//! kernel has no 8021q module and its bridges no vlan_filtering). Run it in
//! the lab's switch namespace; see `vc5_testkit::vlan_relay`.
//!
//! ```text
//! vc5-vlan-relay --trunk trunk0 --access 10=acc10 --access 20=acc20 \
//!     --stats /tmp/relay.json
//! ```

use clap::Parser;
use std::path::PathBuf;
use vc5_testkit::vlan_relay::{self, RelayOptions};

/// Relays frames between a trunk interface (802.1Q-tagged) and one access
/// interface per VLAN (untagged): a tagged frame of a served VID from the
/// trunk leaves that VID's access interface without its tag, a frame from
/// an access interface leaves the trunk tagged with its VID. Untagged
/// frames on the trunk, unserved VIDs, 802.1ad and double tags are counted
/// and dropped. Ends cleanly on SIGTERM or SIGINT, printing its counters.
#[derive(Parser, Debug)]
#[command(name = "vc5-vlan-relay")]
struct Args {
    /// The trunk interface.
    #[arg(long, value_name = "IF")]
    trunk: String,
    /// A VLAN (1 to 4094) and its access interface (repeatable).
    #[arg(long, value_name = "VID=IF", value_parser = vlan_relay::parse_access, required = true)]
    access: Vec<(u16, String)>,
    /// The priority code point (0 to 7) of the tags it adds.
    #[arg(long, default_value_t = 0)]
    pcp: u8,
    /// Write the counters here as JSON (when ready, and within 50 ms of a change).
    #[arg(long, value_name = "FILE")]
    stats: Option<PathBuf>,
}

fn main() {
    let a = Args::parse();
    let opts = RelayOptions {
        trunk: a.trunk,
        access: a.access,
        pcp: a.pcp,
        program: None,
    };
    match vlan_relay::run(&opts, a.stats.as_deref()) {
        Ok(stats) => println!("{}", stats.to_json()),
        Err(e) => {
            eprintln!("vc5-vlan-relay: {e}");
            std::process::exit(1);
        }
    }
}
