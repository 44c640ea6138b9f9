//! An asynchronous client for BIRD's control socket.
//!
//! One [`BirdClient`] is one connection: it reads the greeting on connect,
//! then sends one command at a time and reads its whole reply. Every reply is
//! returned typed ([`Reply`]); [`BirdClient::run`] additionally turns 8xxx and
//! 9xxx replies into [`BirdError::Command`], and [`BirdClient::configure`]
//! interprets the answers to `configure`.

use std::path::{Path, PathBuf};
use std::time::Duration;

use thiserror::Error;
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::UnixStream;
use tracing::{debug, trace};

use super::reply::{Event, Position, ProtocolError, Reply, ReplyParser};

/// How long a connection attempt (connect + greeting) may take by default.
pub const CONNECT_TIMEOUT: Duration = Duration::from_secs(2);
/// How long one command may take by default. `configure` of a large
/// configuration is the slowest thing vc5 asks for.
pub const COMMAND_TIMEOUT: Duration = Duration::from_secs(30);

/// Errors talking to BIRD.
#[derive(Debug, Error)]
pub enum BirdError {
    /// The socket could not be connected (absent, refused, no permission).
    #[error("cannot connect to BIRD control socket {}: {source}", path.display())]
    Connect {
        /// The socket path.
        path: PathBuf,
        /// Why.
        #[source]
        source: std::io::Error,
    },
    /// Reading or writing failed.
    #[error("BIRD control socket I/O: {0}")]
    Io(#[from] std::io::Error),
    /// BIRD closed the connection (it stopped or restarted).
    #[error("BIRD closed the control connection")]
    Closed,
    /// No complete answer within the time limit.
    #[error("no answer from BIRD to {what:?} within {after:?}")]
    Timeout {
        /// The command, or "greeting".
        what: String,
        /// The limit that passed.
        after: Duration,
    },
    /// The peer does not speak BIRD's reply protocol.
    #[error(transparent)]
    Protocol(#[from] ProtocolError),
    /// A command that would not be one line.
    #[error("invalid command {0:?}: must be one non-empty line")]
    InvalidCommand(String),
    /// The include file could not be written (not a connection problem).
    #[error("cannot write {}: {source}", path.display())]
    Include {
        /// The include file.
        path: PathBuf,
        /// Why.
        #[source]
        source: std::io::Error,
    },
    /// BIRD answered a command with an error (8xxx or 9xxx).
    #[error("BIRD rejected {command:?}: {code:04} {message}")]
    Command {
        /// The command sent.
        command: String,
        /// BIRD's final reply code.
        code: u16,
        /// BIRD's final reply text.
        message: String,
        /// Where in which file, for configuration errors.
        position: Option<Position>,
    },
}

impl BirdError {
    /// Whether the connection is unusable after this error, so that the caller
    /// must reconnect (as opposed to BIRD having answered with an error).
    pub fn is_connection_error(&self) -> bool {
        !matches!(
            self,
            BirdError::Command { .. } | BirdError::InvalidCommand(_) | BirdError::Include { .. }
        )
    }
}

/// What a successful `configure` told us.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ConfigureOutcome {
    /// 0003: the new configuration is in force.
    Reconfigured,
    /// 0004: accepted; protocols are being restarted in the background.
    InProgress,
    /// 0005: accepted; queued behind a reconfiguration in progress.
    Queued,
    /// 0020: `configure check` found the configuration valid.
    CheckOk,
}

/// One connection to BIRD's control socket.
#[derive(Debug)]
pub struct BirdClient {
    stream: UnixStream,
    parser: ReplyParser,
    greeting: String,
    command_timeout: Duration,
    buf: Vec<u8>,
    /// Replies already read (more than one can arrive in one read).
    ready: std::collections::VecDeque<Reply>,
}

impl BirdClient {
    /// Connects to `path` and reads the greeting, with the default limits.
    pub async fn connect(path: &Path) -> Result<BirdClient, BirdError> {
        BirdClient::connect_with(path, CONNECT_TIMEOUT, COMMAND_TIMEOUT).await
    }

    /// Connects to `path` and reads the greeting (`0001 BIRD x ready.`); a
    /// socket that answers anything else is reported as
    /// [`ProtocolError::NotBird`].
    pub async fn connect_with(
        path: &Path,
        connect_timeout: Duration,
        command_timeout: Duration,
    ) -> Result<BirdClient, BirdError> {
        let attempt = async {
            let stream = UnixStream::connect(path)
                .await
                .map_err(|source| BirdError::Connect {
                    path: path.to_owned(),
                    source,
                })?;
            let mut client = BirdClient {
                stream,
                parser: ReplyParser::new(),
                greeting: String::new(),
                command_timeout,
                buf: vec![0; 16 * 1024],
                ready: Default::default(),
            };
            let greeting = match client.read_reply().await {
                Ok(r) => r,
                Err(BirdError::Protocol(ProtocolError::Malformed(line))) => {
                    return Err(ProtocolError::NotBird(line).into());
                }
                Err(e) => return Err(e),
            };
            if greeting.code() != 1 || greeting.lines.len() != 1 {
                return Err(ProtocolError::NotBird(greeting.to_string()).into());
            }
            client.greeting = greeting.message().to_owned();
            debug!(greeting = %client.greeting, "connected to BIRD");
            Ok(client)
        };
        tokio::time::timeout(connect_timeout, attempt)
            .await
            .map_err(|_| BirdError::Timeout {
                what: "greeting".into(),
                after: connect_timeout,
            })?
    }

    /// BIRD's greeting text, e.g. `BIRD 2.0.12 ready.`.
    pub fn greeting(&self) -> &str {
        &self.greeting
    }

    /// BIRD's version from the greeting, e.g. `2.0.12`.
    pub fn version(&self) -> Option<&str> {
        self.greeting
            .strip_prefix("BIRD ")
            .and_then(|v| v.split_whitespace().next())
    }

    /// Sends `command` and returns BIRD's reply, whatever its code.
    pub async fn command(&mut self, command: &str) -> Result<Reply, BirdError> {
        if command.is_empty() || command.contains(['\n', '\r']) {
            return Err(BirdError::InvalidCommand(command.to_owned()));
        }
        trace!(command, "BIRD command");
        let limit = self.command_timeout;
        let exchange = async {
            let mut line = Vec::with_capacity(command.len() + 1);
            line.extend_from_slice(command.as_bytes());
            line.push(b'\n');
            self.stream.write_all(&line).await?;
            self.read_reply().await
        };
        let reply =
            tokio::time::timeout(limit, exchange)
                .await
                .map_err(|_| BirdError::Timeout {
                    what: command.to_owned(),
                    after: limit,
                })??;
        trace!(command, code = reply.code(), "BIRD reply");
        Ok(reply)
    }

    /// Sends `command`; an 8xxx or 9xxx reply becomes [`BirdError::Command`].
    pub async fn run(&mut self, command: &str) -> Result<Reply, BirdError> {
        let reply = self.command(command).await?;
        if reply.is_error() {
            return Err(BirdError::Command {
                command: command.to_owned(),
                code: reply.code(),
                message: reply.message().to_owned(),
                position: reply.error_position(),
            });
        }
        Ok(reply)
    }

    /// `configure` (or `configure check` when `check_only`): BIRD re-reads its
    /// configuration file. A rejected configuration (8002, with the file, line
    /// and column) leaves BIRD's previous configuration running and comes
    /// back as [`BirdError::Command`].
    pub async fn configure(&mut self, check_only: bool) -> Result<ConfigureOutcome, BirdError> {
        let command = if check_only {
            "configure check"
        } else {
            "configure"
        };
        let reply = self.run(command).await?;
        match reply.code() {
            3 => Ok(ConfigureOutcome::Reconfigured),
            4 => Ok(ConfigureOutcome::InProgress),
            5 => Ok(ConfigureOutcome::Queued),
            20 => Ok(ConfigureOutcome::CheckOk),
            // 0006 (shutting down) and anything unexpected: not in force.
            code => Err(BirdError::Command {
                command: command.to_owned(),
                code,
                message: reply.message().to_owned(),
                position: None,
            }),
        }
    }

    /// Returns when the connection ends (BIRD stopped or restarted), with why.
    /// Spontaneous lines are logged meanwhile. Cancel-safe: it can sit in a
    /// `select!` between commands.
    pub async fn closed(&mut self) -> BirdError {
        loop {
            let n = match self.stream.read(&mut self.buf).await {
                Ok(0) => return BirdError::Closed,
                Ok(n) => n,
                Err(e) => return e.into(),
            };
            match self.parser.push_bytes(&self.buf[..n]) {
                Ok(events) => {
                    for event in events {
                        match event {
                            Event::Async(text) => debug!(text, "BIRD spontaneous message"),
                            Event::Reply(r) => debug!(reply = %r, "unsolicited BIRD reply ignored"),
                            Event::Pending => {}
                        }
                    }
                }
                Err(e) => return e.into(),
            }
        }
    }

    /// Reads until one complete reply has arrived; spontaneous lines are logged.
    async fn read_reply(&mut self) -> Result<Reply, BirdError> {
        loop {
            if let Some(r) = self.ready.pop_front() {
                return Ok(r);
            }
            let n = self.stream.read(&mut self.buf).await?;
            if n == 0 {
                return Err(BirdError::Closed);
            }
            for event in self.parser.push_bytes(&self.buf[..n])? {
                match event {
                    Event::Reply(r) => self.ready.push_back(r),
                    Event::Async(text) => debug!(text, "BIRD spontaneous message"),
                    Event::Pending => {}
                }
            }
        }
    }
}
