//! A minimal, strict HTTP/1.1 client: one request, one response head.
//!
//! A health check needs the status code and nothing else, so rather than carry a
//! general HTTP client this sends a fixed request with `Connection: close` and reads
//! until the end of the response head, which it checks strictly: a peer that is not
//! speaking HTTP/1.x is reported as garbage as soon as its first bytes show it, not
//! after the timeout. The head is limited to [`MAX_HEAD`] bytes, so a peer that
//! streams forever costs a bounded buffer. The body is never read: the connection is
//! dropped once the head is complete.

use std::net::SocketAddr;

use tokio::io::{AsyncRead, AsyncReadExt, AsyncWrite, AsyncWriteExt};

use crate::outcome::Failure;
use crate::spec::{HttpCheck, is_token_byte};

/// Longest response head accepted, interim (1xx) heads included. Real servers send
/// a few hundred bytes; 16 KiB leaves room for large cookies.
pub const MAX_HEAD: usize = 16 * 1024;

/// Bytes asked for per read: a typical response head arrives in one.
const READ_CHUNK: usize = 2048;

/// A formatted request and the statuses that pass.
#[derive(Debug, Clone)]
pub(super) struct Request {
    bytes: Box<[u8]>,
    expect: Box<[u16]>,
}

impl Request {
    /// Formats the request of `check` for `target`; `tls` selects the default port.
    pub(super) fn new(check: &HttpCheck, target: SocketAddr, tls: bool) -> Request {
        let host = match &check.host {
            Some(host) => host.clone(),
            None => {
                let default_port = if tls { 443 } else { 80 };
                let ip = match target {
                    SocketAddr::V4(v4) => v4.ip().to_string(),
                    SocketAddr::V6(v6) => format!("[{}]", v6.ip()),
                };
                if target.port() == default_port {
                    ip
                } else {
                    format!("{ip}:{}", target.port())
                }
            }
        };
        let text = format!(
            "{} {} HTTP/1.1\r\nHost: {host}\r\nUser-Agent: vc5-health/{}\r\nAccept: */*\r\nConnection: close\r\n\r\n",
            check.method,
            check.path,
            env!("CARGO_PKG_VERSION"),
        );
        Request {
            bytes: text.into_bytes().into(),
            expect: check.expect.clone().into(),
        }
    }

    /// Sends the request on `stream` and judges the answer.
    pub(super) async fn exchange<S>(&self, stream: &mut S) -> Result<(), Failure>
    where
        S: AsyncRead + AsyncWrite + Unpin,
    {
        stream
            .write_all(&self.bytes)
            .await
            .map_err(|e| Failure::from_io(&e))?;
        // TLS buffers the record until flushed; a plain socket ignores this.
        stream.flush().await.map_err(|e| Failure::from_io(&e))?;
        let status = read_status(stream).await?;
        if self.expect.contains(&status) {
            Ok(())
        } else {
            Err(Failure::HttpStatus(status))
        }
    }
}

/// Reads response heads until a final (non-1xx) one and returns its status.
async fn read_status<S: AsyncRead + Unpin>(stream: &mut S) -> Result<u16, Failure> {
    // Read straight into the heap buffer rather than through a stack array: the
    // array would live in every check task's future, idle or not.
    let mut buf = Vec::with_capacity(READ_CHUNK);
    // Bytes of earlier interim heads already consumed from `buf`.
    let mut consumed = 0;
    loop {
        match parse_head(&buf[consumed..]) {
            Ok(Some(head)) if (100..200).contains(&head.status) && head.status != 101 => {
                // An interim response (103 Early Hints, a stray 100 Continue): the
                // final one follows on the same connection.
                consumed += head.len;
                continue;
            }
            Ok(Some(head)) => return Ok(head.status),
            Ok(None) => {}
            Err(e) => return Err(Failure::garbage(e.0, &buf[consumed..])),
        }
        if buf.len() >= MAX_HEAD {
            return Err(Failure::garbage("response head too long", &buf[consumed..]));
        }
        buf.reserve(READ_CHUNK.min(MAX_HEAD - buf.len()));
        let n = stream
            .read_buf(&mut buf)
            .await
            .map_err(|e| Failure::from_io(&e))?;
        if n == 0 {
            return Err(if buf.is_empty() {
                Failure::Closed("without a response")
            } else {
                Failure::Closed("before a complete response")
            });
        }
    }
}

/// A complete response head.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Head {
    /// The status code.
    pub status: u16,
    /// Length of the head, its final empty line included.
    pub len: usize,
}

/// Why bytes are not an HTTP/1.x response head.
#[derive(Debug, Clone, Copy, PartialEq, Eq, thiserror::Error)]
#[error("{0}")]
pub struct HeadError(pub &'static str);

/// Parses the response head at the start of `buf`: `Ok(None)` if more bytes are
/// needed, the head if it is complete, an error as soon as the bytes cannot be the
/// start of a valid head.
///
/// Lines may end in CRLF or a bare LF (RFC 9112 §2.2 allows a recipient to accept
/// the latter). Header values are not interpreted, but every header line must be
/// `name: value` with a token name, and obsolete line folding is refused, as RFC
/// 9112 §5.2 lets a user agent do.
pub fn parse_head(buf: &[u8]) -> Result<Option<Head>, HeadError> {
    const PREFIX: &[u8] = b"HTTP/";
    let start = buf.len().min(PREFIX.len());
    if buf[..start] != PREFIX[..start] {
        return Err(HeadError("not HTTP"));
    }
    let Some((status_line, mut pos)) = line(buf, 0) else {
        // A status line is short; a long run of bytes without one is not HTTP.
        if buf.len() > 1024 {
            return Err(HeadError("status line too long"));
        }
        return Ok(None);
    };
    let status = status_code(status_line)?;
    loop {
        let Some((header, next)) = line(buf, pos) else {
            return Ok(None);
        };
        pos = next;
        if header.is_empty() {
            return Ok(Some(Head { status, len: pos }));
        }
        if header[0] == b' ' || header[0] == b'\t' {
            return Err(HeadError("folded header line"));
        }
        let colon = header
            .iter()
            .position(|&b| b == b':')
            .ok_or(HeadError("header line without a colon"))?;
        if colon == 0 || !header[..colon].iter().all(|&b| is_token_byte(b)) {
            return Err(HeadError("invalid header name"));
        }
    }
}

/// The line starting at `from`, without its terminator, and where the next starts.
fn line(buf: &[u8], from: usize) -> Option<(&[u8], usize)> {
    let rest = &buf[from..];
    let lf = rest.iter().position(|&b| b == b'\n')?;
    let text = rest[..lf].strip_suffix(b"\r").unwrap_or(&rest[..lf]);
    Some((text, from + lf + 1))
}

/// The status of `HTTP/1.x SP DIGIT DIGIT DIGIT [SP reason]`.
fn status_code(line: &[u8]) -> Result<u16, HeadError> {
    let rest = line
        .strip_prefix(b"HTTP/1.")
        .ok_or(HeadError("not an HTTP/1.x status line"))?;
    let [minor, b' ', d1, d2, d3, tail @ ..] = rest else {
        return Err(HeadError("malformed status line"));
    };
    if !minor.is_ascii_digit() || ![d1, d2, d3].iter().all(|d| d.is_ascii_digit()) {
        return Err(HeadError("malformed status line"));
    }
    // The reason phrase is free text but must be separated from the code; some
    // servers omit it and its space, which is tolerated.
    if !(tail.is_empty() || tail[0] == b' ') || tail.iter().any(|&b| b < b' ' && b != b'\t') {
        return Err(HeadError("malformed status line"));
    }
    let status = [d1, d2, d3]
        .iter()
        .fold(0u16, |n, &&d| n * 10 + u16::from(d - b'0'));
    if !(100..=599).contains(&status) {
        return Err(HeadError("status code out of range"));
    }
    Ok(status)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn parse(s: &str) -> Result<Option<Head>, HeadError> {
        parse_head(s.as_bytes())
    }

    #[test]
    fn complete_heads_give_their_status() {
        let text = "HTTP/1.1 200 OK\r\nContent-Length: 2\r\n\r\nok";
        assert_eq!(
            parse(text),
            Ok(Some(Head {
                status: 200,
                len: text.len() - 2
            }))
        );
        assert_eq!(
            parse("HTTP/1.0 503 Service Unavailable\n\n").map(|h| h.map(|h| h.status)),
            Ok(Some(503))
        );
        assert_eq!(
            parse("HTTP/1.1 204\r\n\r\n").map(|h| h.map(|h| h.status)),
            Ok(Some(204))
        );
    }

    #[test]
    fn partial_heads_ask_for_more() {
        for partial in [
            "",
            "H",
            "HTTP/",
            "HTTP/1.1 200 OK",
            "HTTP/1.1 200 OK\r\nServer: x\r\n",
            "HTTP/1.1 200 OK\r\n\r",
        ] {
            assert_eq!(parse(partial), Ok(None), "{partial:?}");
        }
    }

    #[test]
    fn garbage_is_refused_early() {
        assert_eq!(parse("SSH-2.0"), Err(HeadError("not HTTP")));
        assert_eq!(parse("HTTX"), Err(HeadError("not HTTP")));
        assert_eq!(
            parse("HTTP/2 200\r\n"),
            Err(HeadError("not an HTTP/1.x status line"))
        );
        for bad in [
            "HTTP/1.1 20 OK\r\n",
            "HTTP/1.1 2000 OK\r\n",
            "HTTP/1.1  200 OK\r\n",
            "HTTP/1.1 200OK\r\n",
            "HTTP/1.x 200 OK\r\n",
            "HTTP/1.1 200 O\x01K\r\n",
        ] {
            assert_eq!(
                parse(bad),
                Err(HeadError("malformed status line")),
                "{bad:?}"
            );
        }
        assert_eq!(
            parse("HTTP/1.1 700 X\r\n"),
            Err(HeadError("status code out of range"))
        );
        assert_eq!(
            parse("HTTP/1.1 200 OK\r\nno colon here\r\n\r\n"),
            Err(HeadError("header line without a colon"))
        );
        assert_eq!(
            parse("HTTP/1.1 200 OK\r\nBad Name: x\r\n\r\n"),
            Err(HeadError("invalid header name"))
        );
        assert_eq!(
            parse("HTTP/1.1 200 OK\r\nA: b\r\n c\r\n\r\n"),
            Err(HeadError("folded header line"))
        );
        let long = format!("HTTP/1.1 200 {}", "x".repeat(2000));
        assert_eq!(parse(&long), Err(HeadError("status line too long")));
    }

    #[test]
    fn request_has_host_and_closes() {
        let check = HttpCheck::default();
        let r = Request::new(&check, "127.0.0.1:80".parse().unwrap(), false);
        let text = String::from_utf8(r.bytes.to_vec()).unwrap();
        assert!(
            text.starts_with("GET / HTTP/1.1\r\nHost: 127.0.0.1\r\n"),
            "{text}"
        );
        assert!(text.ends_with("Connection: close\r\n\r\n"));
        let r = Request::new(&check, "[::1]:8443".parse().unwrap(), true);
        assert!(String::from_utf8_lossy(&r.bytes).contains("Host: [::1]:8443\r\n"));
        let named = HttpCheck {
            host: Some("example.com".into()),
            method: "HEAD".into(),
            path: "/alive".into(),
            ..HttpCheck::default()
        };
        let r = Request::new(&named, "127.0.0.1:8080".parse().unwrap(), false);
        assert!(
            String::from_utf8_lossy(&r.bytes)
                .starts_with("HEAD /alive HTTP/1.1\r\nHost: example.com\r\n")
        );
    }
}
