//! A minimal, strict HTTP/1.1 client: one request, one response head.
//!
//! A health check needs the status code and nothing else, so rather than carry a
//! general HTTP client this sends a fixed request with `Connection: close` and reads
//! until the end of the response head, which `httparse` checks: a peer that is not
//! speaking HTTP/1.x is reported as garbage as soon as its first bytes show it, not
//! after the timeout. The head is limited to [`MAX_HEAD`] bytes, so a peer that
//! streams forever costs a bounded buffer. The body is never read: the connection is
//! dropped once the head is complete.

use std::net::SocketAddr;

use tokio::io::{AsyncRead, AsyncReadExt, AsyncWrite, AsyncWriteExt};

use crate::outcome::Failure;
use crate::spec::HttpCheck;

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
    // Resumed after each read, so that a peer trickling its head byte by byte
    // costs linear time, not a rescan of the whole buffer per byte.
    let mut parser = HeadParser::default();
    loop {
        match parser.feed(&buf[consumed..]) {
            Ok(Some(head)) if (100..200).contains(&head.status) && head.status != 101 => {
                // An interim response (103 Early Hints, a stray 100 Continue): the
                // final one follows on the same connection.
                consumed += head.len;
                parser = HeadParser::default();
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
/// The syntax is `httparse`'s: lines may end in CRLF or a bare LF (RFC 9112 §2.2
/// allows a recipient to accept the latter), header lines must be `name: value`
/// with a token name, and obsolete line folding is refused, as RFC 9112 §5.2 lets
/// a user agent do. On top of it the status must lie in 100–599.
///
/// The probe uses [`HeadParser`], which resumes where it left off; this
/// one-call form is what the tests hold it to.
#[cfg(test)]
pub fn parse_head(buf: &[u8]) -> Result<Option<Head>, HeadError> {
    HeadParser::default().feed(buf)
}

/// The parser of response heads as [`parse_head`] describes it, resumable: fed
/// the same buffer again and again as it grows, it costs linear time in all.
///
/// `httparse` starts from the first byte on every call, so calling it per read
/// would cost a rescan of the whole head per byte of a peer that trickles.
/// Instead this looks at each new byte once for a line end and calls `httparse`
/// twice per head: when the status line is complete, so that a peer not
/// speaking HTTP/1.x is refused at once, and when the empty line ending the
/// head has arrived, to check the header lines and take the status.
#[derive(Debug, Clone, Default)]
pub struct HeadParser {
    /// Whether the status line is complete and was found valid.
    status_line: bool,
    /// Where the line being read starts.
    line_start: usize,
    /// Bytes already searched for a line end.
    scanned: usize,
    /// Header lines seen so far: the room `httparse` needs for them.
    headers: usize,
}

impl HeadParser {
    /// Parses on: `buf` must start with every byte fed before.
    pub fn feed(&mut self, buf: &[u8]) -> Result<Option<Head>, HeadError> {
        const PREFIX: &[u8] = b"HTTP/";
        if !self.status_line {
            // Refuse what is not HTTP from its first bytes, before any line end.
            let start = buf.len().min(PREFIX.len());
            if buf[..start] != PREFIX[..start] {
                return Err(HeadError("not HTTP"));
            }
        }
        loop {
            let Some(lf) = buf[self.scanned..].iter().position(|&b| b == b'\n') else {
                self.scanned = buf.len();
                // A status line is short; a long run of bytes without one is not HTTP.
                if !self.status_line && buf.len() > 1024 {
                    return Err(HeadError("status line too long"));
                }
                return Ok(None);
            };
            let end = self.scanned + lf;
            let line = &buf[self.line_start..end];
            let empty = line.is_empty() || line == b"\r";
            (self.line_start, self.scanned) = (end + 1, end + 1);
            if !self.status_line {
                // With no room for headers, a valid status line alone is partial.
                match parse(&buf[..=end], &mut []) {
                    Ok(None) | Err(HeadError("too many header lines")) => {}
                    Ok(Some(head)) => return Ok(Some(head)),
                    Err(e) => return Err(e),
                }
                self.status_line = true;
            } else if empty {
                let mut room = vec![httparse::EMPTY_HEADER; self.headers];
                return match parse(&buf[..=end], &mut room)? {
                    Some(head) if head.len == end + 1 => Ok(Some(head)),
                    // Cannot happen: httparse ends the head at its first empty line.
                    _ => Err(HeadError("malformed head")),
                };
            } else {
                self.headers += 1;
            }
        }
    }
}

/// One `httparse` call on `head`, with room for `headers`.
fn parse<'a>(
    head: &'a [u8],
    headers: &mut [httparse::Header<'a>],
) -> Result<Option<Head>, HeadError> {
    let mut response = httparse::Response::new(headers);
    let parsed = response.parse(head).map_err(|e| HeadError(head_error(e)))?;
    // httparse fills in the code once the status line is through, complete or not.
    if let Some(status) = response.code
        && !(100..=599).contains(&status)
    {
        return Err(HeadError("status code out of range"));
    }
    match (parsed, response.code) {
        (httparse::Status::Complete(len), Some(status)) => Ok(Some(Head { status, len })),
        (httparse::Status::Complete(_), None) => Err(HeadError("malformed status line")),
        (httparse::Status::Partial, _) => Ok(None),
    }
}

/// What an `httparse` error means for a health check's report.
fn head_error(e: httparse::Error) -> &'static str {
    match e {
        httparse::Error::Version => "not an HTTP/1.x status line",
        httparse::Error::Status | httparse::Error::Token => "malformed status line",
        // httparse reports a line without a colon and a folded line as a bad name.
        httparse::Error::HeaderName => "invalid header line",
        httparse::Error::HeaderValue => "invalid header value",
        httparse::Error::NewLine => "malformed line end",
        httparse::Error::TooManyHeaders => "too many header lines",
    }
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

    /// httparse needs room for every header line; the parser counts them.
    #[test]
    fn heads_with_many_header_lines_parse() {
        let mut text = String::from("HTTP/1.1 200 OK\r\n");
        for i in 0..500 {
            text.push_str(&format!("X-{i}: {i}\r\n"));
        }
        text.push_str("\r\n");
        assert_eq!(
            parse(&text),
            Ok(Some(Head {
                status: 200,
                len: text.len()
            }))
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
        for bad in ["HTTP/2 200\r\n", "HTTP/1.x 200 OK\r\n"] {
            assert_eq!(
                parse(bad),
                Err(HeadError("not an HTTP/1.x status line")),
                "{bad:?}"
            );
        }
        for bad in [
            "HTTP/1.1 20 OK\r\n",
            "HTTP/1.1 2000 OK\r\n",
            "HTTP/1.1  200 OK\r\n",
            "HTTP/1.1 200OK\r\n",
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
        // A line without a colon, a name that is no token, a folded line.
        for bad in [
            "HTTP/1.1 200 OK\r\nno colon here\r\n\r\n",
            "HTTP/1.1 200 OK\r\nBad Name: x\r\n\r\n",
            "HTTP/1.1 200 OK\r\nA: b\r\n c\r\n\r\n",
        ] {
            assert_eq!(parse(bad), Err(HeadError("invalid header line")), "{bad:?}");
        }
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

#[cfg(test)]
mod fuzz {
    use super::*;
    use crate::probe::fuzz::{Rng, property};
    use std::pin::Pin;
    use std::task::{Context, Poll, Waker};
    use tokio::io::ReadBuf;

    const VALID: &[&[u8]] = &[
        b"HTTP/1.1 200 OK\r\nContent-Length: 2\r\nX-A: b\r\n\r\nok",
        b"HTTP/1.0 503 Service Unavailable\n\n",
        b"HTTP/1.1 100 Continue\r\n\r\nHTTP/1.1 103 Early\r\nLink: x\r\n\r\nHTTP/1.1 204\r\n\r\n",
    ];

    fn input(rng: &mut Rng) -> Vec<u8> {
        match rng.below(3) {
            0 => rng.bytes(300),
            1 => {
                let mut v = b"HTTP/1.1 200 OK\r\n".to_vec();
                v.extend(rng.bytes(200));
                v
            }
            _ => {
                let valid = VALID[rng.below(VALID.len())];
                rng.mutate(valid)
            }
        }
    }

    /// Any bytes: a typed answer, never a panic; a head found lies within the
    /// bytes, has a valid status, and every prefix of it asks for more or is
    /// refused, never gives another head.
    #[test]
    fn parse_head_takes_any_bytes() {
        property("parse_head", |rng| {
            let buf = input(rng);
            match parse_head(&buf) {
                Ok(Some(head)) => {
                    assert!(head.len <= buf.len() && (100..=599).contains(&head.status));
                    let cut = rng.below(head.len);
                    assert!(
                        matches!(parse_head(&buf[..cut]), Ok(None)),
                        "{buf:?} at {cut}"
                    );
                    assert_eq!(parse_head(&buf[..head.len]), Ok(Some(head)));
                }
                Ok(None) => {
                    let cut = rng.below(buf.len() + 1);
                    assert!(!matches!(parse_head(&buf[..cut]), Ok(Some(_))), "{buf:?}");
                }
                Err(HeadError(_)) => {}
            }
        });
    }

    /// Fed in random pieces, the resumable parser gives what one call gives.
    #[test]
    fn feeding_in_pieces_gives_what_one_call_gives() {
        property("HeadParser::feed", |rng| {
            let buf = input(rng);
            let whole = parse_head(&buf);
            let mut parser = HeadParser::default();
            let mut end = 0;
            let pieces = loop {
                end = (end + rng.below(40)).min(buf.len());
                match parser.feed(&buf[..end]) {
                    Ok(None) if end < buf.len() => continue,
                    result => break result,
                }
            };
            // Complete or refused early is the same answer as one call gives.
            assert_eq!(pieces, whole, "{buf:?}");
        });
    }

    /// Serves `data` over and over (for ever when `endless`), in chunks of
    /// random size, counting what it served.
    struct Trickle {
        data: Vec<u8>,
        pos: usize,
        served: usize,
        endless: bool,
        rng: Rng,
    }

    impl AsyncRead for Trickle {
        fn poll_read(
            mut self: Pin<&mut Self>,
            _: &mut Context<'_>,
            buf: &mut ReadBuf<'_>,
        ) -> Poll<std::io::Result<()>> {
            let this = &mut *self;
            if this.pos == this.data.len() {
                if !this.endless || this.data.is_empty() {
                    return Poll::Ready(Ok(()));
                }
                this.pos = 0;
            }
            let n = (1 + this.rng.below(700))
                .min(buf.remaining())
                .min(this.data.len() - this.pos);
            buf.put_slice(&this.data[this.pos..this.pos + n]);
            this.pos += n;
            this.served += n;
            Poll::Ready(Ok(()))
        }
    }

    /// The reading loop over any bytes, endless ones included: it ends with a
    /// status or a failure after at most [`MAX_HEAD`] plus one read.
    #[test]
    fn read_status_ends_on_any_stream() {
        property("read_status", |rng| {
            let endless = rng.below(2) == 0;
            let mut data = input(rng);
            if endless && rng.below(2) == 0 {
                // A head that never ends, or interim heads for ever.
                data = [
                    b"HTTP/1.1 200 OK\r\nA: b\r\n" as &[u8],
                    b"HTTP/1.1 100 Continue\r\n\r\n",
                ][rng.below(2)]
                .to_vec();
            }
            let mut stream = Trickle {
                data,
                pos: 0,
                served: 0,
                endless,
                rng: Rng(rng.next()),
            };
            // The stream is always ready, so one poll runs to the end.
            let result = {
                let mut fut = std::pin::pin!(read_status(&mut stream));
                match fut.as_mut().poll(&mut Context::from_waker(Waker::noop())) {
                    Poll::Ready(result) => result,
                    Poll::Pending => panic!("read_status waited on a ready stream"),
                }
            };
            if let Ok(status) = result {
                assert!((100..=599).contains(&status));
            }
            assert!(stream.served <= MAX_HEAD + READ_CHUNK, "{}", stream.served);
        });
    }
}
