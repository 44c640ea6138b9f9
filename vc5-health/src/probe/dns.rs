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

use hickory_proto::op::{Message, MessageType, Query as Question, ResponseCode};
use hickory_proto::rr::Name;
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
    rcode: ResponseCode,
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
        message.add_query(Question::query(name, check.qtype));
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
        // An answer to one question repeats at most that question. hickory
        // reserves room for every question the header announces before it reads
        // one, so 12 bytes claiming 65,535 would cost megabytes: refuse first.
        if let [_, _, _, _, hi, lo, ..] = *answer
            && u16::from_be_bytes([hi, lo]) > 1
        {
            return Err(Failure::garbage(
                format_args!(
                    "not a DNS message ({} questions in an answer to one)",
                    u16::from_be_bytes([hi, lo])
                ),
                answer,
            ));
        }
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
        if rcode == u16::from(self.rcode) {
            Ok(())
        } else {
            Err(Failure::DnsRcode(rcode))
        }
    }
}

async fn udp(spec: &CheckSpec, query: &[u8], phase: &AtomicU8) -> Result<Vec<u8>, Failure> {
    let socket = match &spec.netns {
        Some(ns) => {
            let fd = super::netns_socket(spec, ns, libc::SOCK_DGRAM)?;
            UdpSocket::from_std(std::net::UdpSocket::from(fd)).map_err(|e| Failure::from_io(&e))?
        }
        None => own_udp(spec).await?,
    };
    udp_exchange(spec, socket, query, phase).await
}

/// A UDP socket of the process's own namespace, from the source if any.
async fn own_udp(spec: &CheckSpec) -> Result<UdpSocket, Failure> {
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
    Ok(socket)
}

async fn udp_exchange(
    spec: &CheckSpec,
    socket: UdpSocket,
    query: &[u8],
    phase: &AtomicU8,
) -> Result<Vec<u8>, Failure> {
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

    /// A valid answer to the default query: the question, one NS record with a
    /// compressed name, an additional A record.
    fn valid(id: u16) -> Vec<u8> {
        let mut v = answer(id, 0, MessageType::Response);
        v[5] = 1; // one question
        v[7] = 1; // one answer
        v[11] = 1; // one additional
        v.extend([0, 0, 2, 0, 1]); // . NS IN
        // . NS IN ttl 60, rdata "a.root" (a pointer to offset 12 ends it)
        v.extend([0, 0, 2, 0, 1, 0, 0, 0, 60, 0, 4, 1, b'a', 0xc0, 12]);
        // a.<ptr> A IN ttl 60 192.0.2.1, name pointing into the NS rdata
        v.extend([0xc0, 28, 0, 1, 0, 1, 0, 0, 0, 60, 0, 4, 192, 0, 2, 1]);
        v
    }

    #[test]
    fn the_valid_sample_is_valid() {
        let q = query();
        assert_eq!(q.judge(9, &valid(9)), Ok(()));
        assert!(Message::from_vec(&valid(9)).unwrap().answers.len() == 1);
    }

    /// A 12-byte header announcing 65,535 questions is refused before anything
    /// is reserved for them.
    #[test]
    fn many_questions_are_refused_at_once() {
        let mut v = answer(7, 0, MessageType::Response);
        v[4] = 0xff;
        v[5] = 0xff;
        assert!(matches!(
            query().judge(7, &v),
            Err(Failure::Garbage(m)) if m.contains("65535 questions")
        ));
    }

    /// Any bytes: random, mutated valid answers, truncations, huge counts,
    /// compression pointers in loops: a typed failure or a pass, never a panic
    /// (hangs are the property runner's watchdog's).
    #[test]
    fn judge_takes_any_bytes() {
        use super::super::fuzz::property;
        property("dns judge", |rng| {
            let q = query();
            let id = rng.next() as u16;
            let mut v = match rng.below(5) {
                0 => rng.bytes(600),
                1 => {
                    let v = valid(id);
                    v[..rng.below(v.len() + 1)].to_vec()
                }
                _ => rng.mutate(&valid(id)),
            };
            match rng.below(6) {
                // Huge counts in any section.
                0 if v.len() >= 12 => {
                    let at = 4 + 2 * rng.below(4);
                    v[at] = 0xff;
                    v[at + 1] = rng.next() as u8;
                }
                // A compression pointer to itself, or two pointing at each other.
                1 if v.len() >= 14 => {
                    let at = 12 + rng.below(v.len() - 13);
                    let target = if rng.below(2) == 0 { at } else { at + 2 };
                    v[at] = 0xc0 | (target >> 8) as u8;
                    v[at + 1] = target as u8;
                    if target == at + 2 && v.len() >= at + 4 {
                        v[at + 2] = 0xc0 | (at >> 8) as u8;
                        v[at + 3] = at as u8;
                    }
                }
                _ => {}
            }
            match q.judge(id, &v) {
                Ok(()) | Err(Failure::Garbage(_) | Failure::DnsRcode(_)) => {}
                Err(other) => panic!("unexpected failure {other:?} for {v:?}"),
            }
        });
    }
}
