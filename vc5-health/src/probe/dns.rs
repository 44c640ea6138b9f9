//! The dns check: one query over UDP or TCP, judged by its response code.
//!
//! hickory-proto encodes the query and decodes the answer; the exchange itself is
//! a few lines of tokio, so neither a resolver nor a client crate is needed. The
//! query is encoded once; each run patches in a fresh random id.
//!
//! The UDP socket is connected to the target, so the kernel drops datagrams from
//! anyone else and reports an ICMP port unreachable as "connection refused". As each
//! run uses a fresh socket, an answer with the wrong id can only be the target's own
//! mistake and is reported as garbage rather than waited out.

use std::net::{IpAddr, Ipv4Addr, Ipv6Addr, SocketAddr};
use std::sync::atomic::{AtomicU8, Ordering};

use hickory_proto::op::{Message, MessageType, Query as Question};
use hickory_proto::rr::{Name, RecordType};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::UdpSocket;

use crate::outcome::{Failure, Phase};
use crate::spec::{CheckSpec, DnsCheck, DnsTransport, SpecError};

/// Largest UDP answer read. Queries carry no EDNS, so conforming answers are at
/// most 512 bytes; the margin lets an oversized one still be decoded.
const UDP_BUFFER: usize = 4096;

/// An encoded query and the response code that passes.
#[derive(Debug, Clone)]
pub(super) struct Query {
    bytes: Box<[u8]>,
    transport: DnsTransport,
    rcode: u16,
}

impl Query {
    pub(super) fn new(check: &DnsCheck) -> Result<Query, SpecError> {
        let mut name = Name::from_ascii(&check.query)
            .map_err(|e| SpecError::Dns(format!("{:?}: {e}", check.query)))?;
        name.set_fqdn(true);
        let mut message = Message::query();
        // Recursion desired, as `dig` asks by default: a resolver answers from its
        // cache or priming data, an authoritative server ignores the bit.
        message.metadata.recursion_desired = true;
        message.add_query(Question::query(name, RecordType::from(check.qtype)));
        let bytes = message
            .to_vec()
            .map_err(|e| SpecError::Dns(e.to_string()))?;
        Ok(Query {
            bytes: bytes.into(),
            transport: check.transport,
            rcode: check.rcode,
        })
    }

    /// The query with a fresh id, and that id.
    fn fresh(&self) -> (u16, Vec<u8>) {
        let id = crate::random_u64() as u16;
        let mut bytes = self.bytes.to_vec();
        bytes[..2].copy_from_slice(&id.to_be_bytes());
        (id, bytes)
    }

    pub(super) async fn ask(&self, spec: &CheckSpec, phase: &AtomicU8) -> Result<(), Failure> {
        let (id, query) = self.fresh();
        let answer = match self.transport {
            DnsTransport::Udp => udp(spec, &query, phase).await?,
            DnsTransport::Tcp => tcp(spec, &query, phase).await?,
        };
        self.judge(id, &answer)
    }

    fn judge(&self, id: u16, answer: &[u8]) -> Result<(), Failure> {
        let message = Message::from_vec(answer)
            .map_err(|e| Failure::garbage(format_args!("not a DNS message ({e})"), answer))?;
        if message.metadata.message_type != MessageType::Response {
            return Err(Failure::garbage(
                "a DNS query instead of a response",
                answer,
            ));
        }
        if message.metadata.id != id {
            return Err(Failure::Garbage(format!(
                "DNS answer with id {}, expected {id}",
                message.metadata.id
            )));
        }
        let rcode = u16::from(message.metadata.response_code);
        if rcode == self.rcode {
            Ok(())
        } else {
            Err(Failure::DnsRcode(rcode))
        }
    }
}

async fn udp(spec: &CheckSpec, query: &[u8], phase: &AtomicU8) -> Result<Vec<u8>, Failure> {
    let local = match spec.bind_source() {
        Some(source) => SocketAddr::new(source, 0),
        None if spec.target.is_ipv4() => SocketAddr::new(IpAddr::V4(Ipv4Addr::UNSPECIFIED), 0),
        None => SocketAddr::new(IpAddr::V6(Ipv6Addr::UNSPECIFIED), 0),
    };
    let socket = UdpSocket::bind(local)
        .await
        .map_err(|e| match spec.bind_source() {
            Some(addr) => Failure::Bind {
                addr,
                reason: e.to_string(),
            },
            None => Failure::from_io(&e),
        })?;
    socket
        .connect(spec.target)
        .await
        .map_err(|e| Failure::from_io(&e))?;
    phase.store(Phase::Waiting.as_u8(), Ordering::Relaxed);
    socket.send(query).await.map_err(|e| Failure::from_io(&e))?;
    let mut buf = vec![0u8; UDP_BUFFER];
    let n = socket
        .recv(&mut buf)
        .await
        .map_err(|e| Failure::from_io(&e))?;
    buf.truncate(n);
    Ok(buf)
}

async fn tcp(spec: &CheckSpec, query: &[u8], phase: &AtomicU8) -> Result<Vec<u8>, Failure> {
    let mut stream = super::connect(spec).await?;
    phase.store(Phase::Waiting.as_u8(), Ordering::Relaxed);
    // One write for prefix and message, so they leave in one segment.
    let len = u16::try_from(query.len()).map_err(|_| Failure::Io("DNS query too long".into()))?;
    let mut framed = Vec::with_capacity(2 + query.len());
    framed.extend_from_slice(&len.to_be_bytes());
    framed.extend_from_slice(query);
    stream
        .write_all(&framed)
        .await
        .map_err(|e| Failure::from_io(&e))?;
    let mut prefix = [0u8; 2];
    match stream.read_exact(&mut prefix).await {
        Ok(_) => {}
        Err(e) if e.kind() == std::io::ErrorKind::UnexpectedEof => {
            return Err(Failure::Closed("without a response"));
        }
        Err(e) => return Err(Failure::from_io(&e)),
    }
    let len = usize::from(u16::from_be_bytes(prefix));
    let mut answer = vec![0u8; len];
    stream
        .read_exact(&mut answer)
        .await
        .map_err(|e| Failure::from_io(&e))?;
    Ok(answer)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn query() -> Query {
        Query::new(&DnsCheck::default()).unwrap()
    }

    fn answer(id: u16, rcode: u16, kind: MessageType) -> Vec<u8> {
        let mut m = Message::new(id, kind, hickory_proto::op::OpCode::Query);
        m.metadata.response_code = rcode.into();
        m.to_vec().unwrap()
    }

    #[test]
    fn answers_are_judged_by_id_kind_and_rcode() {
        let q = query();
        let (id, bytes) = q.fresh();
        assert_eq!(u16::from_be_bytes([bytes[0], bytes[1]]), id);
        assert_eq!(q.judge(7, &answer(7, 0, MessageType::Response)), Ok(()));
        assert_eq!(
            q.judge(7, &answer(7, 2, MessageType::Response)),
            Err(Failure::DnsRcode(2))
        );
        assert!(matches!(
            q.judge(7, &answer(8, 0, MessageType::Response)),
            Err(Failure::Garbage(m)) if m.contains("id 8, expected 7")
        ));
        assert!(matches!(
            q.judge(7, &answer(7, 0, MessageType::Query)),
            Err(Failure::Garbage(m)) if m.contains("instead of a response")
        ));
        assert!(matches!(
            q.judge(7, b"hello"),
            Err(Failure::Garbage(m)) if m.starts_with("not a DNS message")
        ));
    }

    #[test]
    fn bad_names_are_refused() {
        let check = DnsCheck {
            query: "a..b".into(),
            ..DnsCheck::default()
        };
        assert!(Query::new(&check).is_err());
    }
}
