//! BIRD's control-socket reply protocol, without any I/O.
//!
//! BIRD answers every command with a *reply*: one or more lines, each ending
//! in `\n`, in one of these forms (BIRD's `nest/cli.c`, `cli_vprintf`, and
//! `client/client.c`, `server_got_reply`):
//!
//! | form | meaning |
//! | --- | --- |
//! | `DDDD-text` | a line with code `DDDD`; more lines of this reply follow |
//! | ` text` | continuation: same code as the previous line, more lines follow |
//! | `DDDD text` | the final line of the reply (BIRD writes `0000 ` after tables) |
//! | `+text` | a spontaneous (asynchronous) printout, not part of any reply |
//!
//! The code is four decimal digits; its first digit is its class: `0` success,
//! `1` table entry, `2` table heading, `8` run-time error, `9` parse error
//! (`doc/reply_codes` in BIRD's sources lists them). On connection BIRD sends
//! a one-line greeting, `0001 BIRD x.y.z ready.`.
//!
//! BIRD writes a continuation (` text`) only when the previous line had the
//! same code and was itself a `-` line, so a [`Reply`] can be written back to
//! the exact bytes BIRD sent ([`Reply::to_wire`]); the golden transcripts in
//! `tests/golden/` are checked that way.

use std::fmt;

use thiserror::Error;

/// The longest line accepted from the socket. BIRD's own lines are at most
/// 512 bytes (`CLI_LINE_SIZE`); anything far longer is not BIRD talking.
pub const MAX_LINE: usize = 64 * 1024;

/// The most lines one reply may have. vc5 never asks for a routing table, so
/// a reply this long means the peer is not the BIRD we expect.
pub const MAX_REPLY_LINES: usize = 100_000;

/// The most text one reply may hold. The line limits alone would allow
/// `MAX_REPLY_LINES` × `MAX_LINE` (6.5 GB) from a peer that sends long lines
/// without ending the reply; this keeps a misbehaving socket to a few
/// megabytes of memory.
pub const MAX_REPLY_BYTES: usize = 16 * 1024 * 1024;

/// The class of a reply code, from its first digit.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum CodeClass {
    /// 0xxx: action successfully completed.
    Success,
    /// 1xxx: table entry.
    TableEntry,
    /// 2xxx: table heading.
    TableHeading,
    /// 8xxx: run-time error (e.g. 8002 configuration file error).
    RuntimeError,
    /// 9xxx: parse error of the command itself (e.g. 9001 syntax error).
    ParseError,
    /// Any other first digit: reserved, never sent by BIRD 2.
    Other,
}

impl CodeClass {
    /// The class of `code`.
    pub fn of(code: u16) -> CodeClass {
        match code / 1000 {
            0 => CodeClass::Success,
            1 => CodeClass::TableEntry,
            2 => CodeClass::TableHeading,
            8 => CodeClass::RuntimeError,
            9 => CodeClass::ParseError,
            _ => CodeClass::Other,
        }
    }
}

/// One line of a reply, with continuation lines resolved to their code.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ReplyLine {
    /// The line's code (for a continuation line: the code it continues).
    pub code: u16,
    /// The text after the code and its separator (or after the leading space
    /// of a continuation line).
    pub text: String,
    /// Whether BIRD sent this line as a continuation (` text`).
    pub continuation: bool,
}

/// A complete reply to one command.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Reply {
    /// Every line, the final one last.
    pub lines: Vec<ReplyLine>,
}

impl Reply {
    /// The code of the final line: the outcome of the command.
    pub fn code(&self) -> u16 {
        self.lines.last().map_or(0, |l| l.code)
    }

    /// The class of [`Reply::code`].
    pub fn class(&self) -> CodeClass {
        CodeClass::of(self.code())
    }

    /// The text of the final line.
    pub fn message(&self) -> &str {
        self.lines.last().map_or("", |l| l.text.as_str())
    }

    /// Whether the command succeeded (final code 0xxx).
    pub fn is_success(&self) -> bool {
        self.class() == CodeClass::Success
    }

    /// Whether the command failed (final code 8xxx or 9xxx).
    pub fn is_error(&self) -> bool {
        matches!(
            self.class(),
            CodeClass::RuntimeError | CodeClass::ParseError
        )
    }

    /// The lines that carry `code`.
    pub fn lines_with(&self, code: u16) -> impl Iterator<Item = &str> {
        self.lines
            .iter()
            .filter(move |l| l.code == code)
            .map(|l| l.text.as_str())
    }

    /// Where a configuration error is, for 8002 replies such as
    /// `8002 /etc/bird.conf:12:3 syntax error, unexpected ...`.
    pub fn error_position(&self) -> Option<Position> {
        if !self.is_error() {
            return None;
        }
        Position::parse(self.message())
    }

    /// The reply as BIRD writes it on the wire (see the module docs).
    pub fn to_wire(&self) -> Vec<u8> {
        let mut out = Vec::new();
        let n = self.lines.len();
        for (i, l) in self.lines.iter().enumerate() {
            if l.continuation {
                out.push(b' ');
            } else {
                let sep = if i + 1 == n { ' ' } else { '-' };
                out.extend_from_slice(format!("{:04}{sep}", l.code).as_bytes());
            }
            out.extend_from_slice(l.text.as_bytes());
            out.push(b'\n');
        }
        out
    }
}

impl fmt::Display for Reply {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{:04} {}", self.code(), self.message())
    }
}

/// A position in a configuration file, as BIRD reports it in an 8002 reply.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Position {
    /// The file BIRD was reading (the operator's file or an include).
    pub file: String,
    /// 1-based line.
    pub line: u32,
    /// 1-based column.
    pub column: u32,
    /// BIRD's message after the position.
    pub message: String,
}

impl Position {
    /// Parses `FILE:LINE:COL message`. File names may contain colons, so the
    /// line and column are taken from the right of the first field.
    pub fn parse(text: &str) -> Option<Position> {
        let (loc, message) = text.split_once(' ').unwrap_or((text, ""));
        let mut parts = loc.rsplitn(3, ':');
        let column = parts.next()?.parse().ok()?;
        let line = parts.next()?.parse().ok()?;
        let file = parts.next()?;
        if file.is_empty() {
            return None;
        }
        Some(Position {
            file: file.to_owned(),
            line,
            column,
            message: message.to_owned(),
        })
    }
}

impl fmt::Display for Position {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(
            f,
            "{}:{}:{}: {}",
            self.file, self.line, self.column, self.message
        )
    }
}

/// Something on the socket that is not BIRD's reply protocol.
#[derive(Debug, Clone, PartialEq, Eq, Error)]
pub enum ProtocolError {
    /// A line that is neither `DDDD-`, `DDDD `, ` ` nor `+`.
    #[error("malformed reply line {0:?}")]
    Malformed(String),
    /// A continuation line with no coded line before it in the same reply.
    #[error("continuation line {0:?} without a preceding coded line")]
    OrphanContinuation(String),
    /// A line longer than [`MAX_LINE`].
    #[error("reply line longer than {MAX_LINE} bytes")]
    LineTooLong,
    /// A reply with more than [`MAX_REPLY_LINES`] lines or
    /// [`MAX_REPLY_BYTES`] bytes of text.
    #[error("reply longer than {MAX_REPLY_LINES} lines or {MAX_REPLY_BYTES} bytes")]
    ReplyTooLong,
    /// The first reply was not the `0001` greeting.
    #[error("not a BIRD control socket: greeting was {0:?}")]
    NotBird(String),
}

/// What one input line completed.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Event {
    /// The reply is not complete yet.
    Pending,
    /// A spontaneous `+` printout (outside any reply).
    Async(String),
    /// A complete reply.
    Reply(Reply),
}

/// Assembles replies from lines; feed it with [`ReplyParser::push_line`] or
/// raw bytes with [`ReplyParser::push_bytes`].
#[derive(Debug, Default)]
pub struct ReplyParser {
    lines: Vec<ReplyLine>,
    /// Bytes of text in `lines`.
    bytes: usize,
    /// Bytes of a line not yet terminated by `\n`.
    partial: Vec<u8>,
}

impl ReplyParser {
    /// A parser at the start of a reply.
    pub fn new() -> ReplyParser {
        ReplyParser::default()
    }

    /// Whether part of a reply has been read.
    pub fn in_reply(&self) -> bool {
        !self.lines.is_empty() || !self.partial.is_empty()
    }

    /// Consumes one line, without its `\n`.
    pub fn push_line(&mut self, raw: &[u8]) -> Result<Event, ProtocolError> {
        if raw.len() > MAX_LINE {
            return Err(ProtocolError::LineTooLong);
        }
        let line = String::from_utf8_lossy(raw);
        if let Some(rest) = line.strip_prefix('+') {
            return Ok(Event::Async(rest.to_owned()));
        }
        if let Some(rest) = line.strip_prefix(' ') {
            let Some(prev) = self.lines.last() else {
                return Err(ProtocolError::OrphanContinuation(line.into_owned()));
            };
            let code = prev.code;
            self.add(ReplyLine {
                code,
                text: rest.to_owned(),
                continuation: true,
            })?;
            return Ok(Event::Pending);
        }
        let bytes = line.as_bytes();
        let coded = bytes.len() >= 5
            && bytes[..4].iter().all(u8::is_ascii_digit)
            && (bytes[4] == b' ' || bytes[4] == b'-');
        if !coded {
            return Err(ProtocolError::Malformed(line.into_owned()));
        }
        // Four ASCII digits always parse; the fallback is never taken.
        let code = line[..4].parse::<u16>().unwrap_or(0);
        let last = bytes[4] == b' ';
        self.add(ReplyLine {
            code,
            text: line[5..].to_owned(),
            continuation: false,
        })?;
        if last {
            self.bytes = 0;
            let lines = std::mem::take(&mut self.lines);
            Ok(Event::Reply(Reply { lines }))
        } else {
            Ok(Event::Pending)
        }
    }

    fn add(&mut self, line: ReplyLine) -> Result<(), ProtocolError> {
        if self.lines.len() >= MAX_REPLY_LINES || self.bytes + line.text.len() > MAX_REPLY_BYTES {
            return Err(ProtocolError::ReplyTooLong);
        }
        self.bytes += line.text.len();
        self.lines.push(line);
        Ok(())
    }

    /// Consumes raw bytes (any split), returning every event they complete.
    pub fn push_bytes(&mut self, mut data: &[u8]) -> Result<Vec<Event>, ProtocolError> {
        let mut events = Vec::new();
        while let Some(nl) = data.iter().position(|&b| b == b'\n') {
            let event = if self.partial.is_empty() {
                self.push_line(&data[..nl])?
            } else {
                let mut line = std::mem::take(&mut self.partial);
                line.extend_from_slice(&data[..nl]);
                self.push_line(&line)?
            };
            if event != Event::Pending {
                events.push(event);
            }
            data = &data[nl + 1..];
        }
        if self.partial.len() + data.len() > MAX_LINE {
            return Err(ProtocolError::LineTooLong);
        }
        self.partial.extend_from_slice(data);
        Ok(events)
    }
}

/// Parses a whole transcript (a sequence of complete replies).
pub fn parse_all(data: &[u8]) -> Result<Vec<Reply>, ProtocolError> {
    let mut p = ReplyParser::new();
    let events = p.push_bytes(data)?;
    Ok(events
        .into_iter()
        .filter_map(|e| match e {
            Event::Reply(r) => Some(r),
            _ => None,
        })
        .collect())
}

#[cfg(test)]
mod tests {
    use super::*;

    fn one(data: &[u8]) -> Reply {
        let r = parse_all(data).expect("parses");
        assert_eq!(r.len(), 1);
        r.into_iter().next().expect("one reply")
    }

    #[test]
    fn final_line_only() {
        let r = one(b"0001 BIRD 2.0.12 ready.\n");
        assert_eq!(r.code(), 1);
        assert_eq!(r.message(), "BIRD 2.0.12 ready.");
        assert!(r.is_success());
    }

    #[test]
    fn continuation_takes_previous_code() {
        let r = one(b"1000-BIRD 2.0.12\n1011-Router ID is 1.2.3.4\n Hostname is vm\n0013 Daemon is up and running\n");
        let codes: Vec<u16> = r.lines.iter().map(|l| l.code).collect();
        assert_eq!(codes, [1000, 1011, 1011, 13]);
        assert_eq!(r.lines[2].text, "Hostname is vm");
        assert!(r.lines[2].continuation);
    }

    #[test]
    fn empty_final_text() {
        let r = one(b"1002-x\n0000 \n");
        assert_eq!(r.code(), 0);
        assert_eq!(r.message(), "");
    }

    #[test]
    fn classes() {
        assert_eq!(CodeClass::of(1), CodeClass::Success);
        assert_eq!(CodeClass::of(1007), CodeClass::TableEntry);
        assert_eq!(CodeClass::of(2002), CodeClass::TableHeading);
        assert_eq!(CodeClass::of(8002), CodeClass::RuntimeError);
        assert_eq!(CodeClass::of(9001), CodeClass::ParseError);
        assert_eq!(CodeClass::of(5000), CodeClass::Other);
    }

    #[test]
    fn error_position() {
        let r = one(b"0002-Reading configuration from /a:b/bird.conf\n8002 /a:b/bird.conf:5:54 syntax error, unexpected '}'\n");
        let p = r.error_position().expect("position");
        assert_eq!(p.file, "/a:b/bird.conf");
        assert_eq!((p.line, p.column), (5, 54));
        assert_eq!(p.message, "syntax error, unexpected '}'");
        let r = one(b"8002 /x.conf: No such file or directory\n");
        assert_eq!(r.error_position(), None);
    }

    #[test]
    fn async_lines_are_separate() {
        let mut p = ReplyParser::new();
        let ev = p.push_bytes(b"+log line\n0000 \n").expect("parses");
        assert_eq!(ev[0], Event::Async("log line".into()));
        assert!(matches!(ev[1], Event::Reply(_)));
    }

    #[test]
    fn any_split_gives_same_result() {
        let wire = b"2002-Name Proto\n1002-device1 Device\n vc5_vips4 Static\n0000 \n";
        let whole = parse_all(wire).expect("parses");
        for cut in 0..wire.len() {
            let mut p = ReplyParser::new();
            let mut ev = p.push_bytes(&wire[..cut]).expect("first half");
            ev.extend(p.push_bytes(&wire[cut..]).expect("second half"));
            let got: Vec<Reply> = ev
                .into_iter()
                .filter_map(|e| match e {
                    Event::Reply(r) => Some(r),
                    _ => None,
                })
                .collect();
            assert_eq!(got, whole, "cut at {cut}");
        }
        assert_eq!(whole[0].to_wire(), wire);
    }

    #[test]
    fn garbage_is_an_error() {
        let mut p = ReplyParser::new();
        assert!(matches!(
            p.push_bytes(b"HTTP/1.1 200 OK\n"),
            Err(ProtocolError::Malformed(_))
        ));
        let mut p = ReplyParser::new();
        assert!(matches!(
            p.push_bytes(b" orphan\n"),
            Err(ProtocolError::OrphanContinuation(_))
        ));
        let mut p = ReplyParser::new();
        assert!(matches!(
            p.push_bytes(b"12a4 x\n"),
            Err(ProtocolError::Malformed(_))
        ));
        let mut p = ReplyParser::new();
        assert_eq!(
            p.push_bytes(&vec![b'x'; MAX_LINE + 1]),
            Err(ProtocolError::LineTooLong)
        );
        // Short lines and non-UTF-8 must not panic.
        for junk in [&b"0\n"[..], b"00000\n", b"\xff\xfe\n", b"\n", b"0001\n"] {
            let _ = ReplyParser::new().push_bytes(junk);
        }
    }
}
