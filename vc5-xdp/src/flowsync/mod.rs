//! `vc5-flowsync` (design.md §2.6). The pure part: the datagram codec
//! ([`wire`]), the key file ([`keys`]), per-sender replay protection
//! ([`replay`]) and the protocol logic ([`engine`]) test without root. The
//! process around them: its configuration keys ([`config`]), the pinned
//! maps ([`pinned`]), the group socket ([`net`]) and the event loop ([`run`]).
//! The two-load-balancer set-up (root) that the integration tests and
//! `vc5-flowsync-bench` share is `vc5_testkit::flowsync`.
//!
//! A receiver runs, for every datagram: [`wire::decode`] (header checks,
//! then AEAD open with the key named by the header, then record parsing),
//! then [`replay::ReplayGuard::accept`] on the authenticated header. Each
//! step fails with a typed error whose `reason()` names a drop counter.

pub mod config;
pub mod engine;
pub mod keys;
pub mod net;
pub mod pinned;
pub mod replay;
pub mod run;
pub mod settings;
pub mod status;
pub mod wire;

pub use keys::{Key, KeyFileError, Keyring};
pub use replay::{ReplayError, ReplayGuard, START_SLACK_MS};
pub use wire::{
    Datagram, DecodeError, DumpEnd, EncodeError, FlowRecord, Header, MessageType, Op, Opener,
    Sealer, decode,
};
