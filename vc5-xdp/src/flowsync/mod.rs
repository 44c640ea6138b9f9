//! The pure part of `vc5-flowsync` (design.md §2.6): the datagram codec
//! ([`wire`]), the key file ([`keys`]) and per-sender replay protection
//! ([`replay`]). Nothing here touches the data plane or a socket, so all of
//! it tests without root.
//!
//! A receiver runs, for every datagram: [`wire::decode`] (header checks,
//! then AEAD open with the key named by the header, then record parsing),
//! then [`replay::ReplayGuard::accept`] on the authenticated header. Each
//! step fails with a typed error whose `reason()` names a drop counter.

pub mod keys;
pub mod replay;
pub mod settings;
pub mod status;
pub mod wire;

pub use keys::{Key, KeyFileError, Keyring};
pub use replay::{ReplayError, ReplayGuard, START_SLACK_MS};
pub use wire::{
    Datagram, DecodeError, DumpEnd, EncodeError, FlowRecord, Header, MessageType, Op, Opener,
    Sealer, decode,
};
