//! BIRD mode: keep BIRD's running configuration in line with the desired
//! VIPs, through the include file and `configure`.
//!
//! For every new desired set the driver rewrites the include file and sends
//! `configure`, then checks that BIRD has vc5's protocols (a `bird.conf`
//! that does not include the file is reported, not silently accepted). A
//! rejected configuration (8002 with file, line and column, or a 9xxx) leaves
//! BIRD on its previous configuration; the driver reports it and tries again
//! every [`BirdConfig::retry_interval`] until BIRD accepts it.
//!
//! A lost connection (BIRD stopped or restarted) is noticed at once (the
//! driver waits on the socket between commands), reconnected with backoff and
//! the desired state re-applied, so a restarted BIRD is back in line within a
//! second of answering. If BIRD stays unreachable for [`BirdConfig::grace`],
//! the driver gives up and the announcer falls back to its own BGP speaker.
//!
//! The driver does not write the announcer's status: it reports what
//! happened (`BirdReport`) to the announcer's task, which alone owns it.

use std::collections::BTreeSet;
use std::net::IpAddr;
use std::path::PathBuf;
use std::sync::Arc;
use std::time::{Duration, SystemTime};

// Tokio's clock for every deadline, so that the backoff and the grace are
// tested with time paused.
use tokio::sync::{mpsc, watch};
use tokio::time::Instant;
use tracing::{info, warn};

use super::client::{BirdClient, BirdError};
use super::include::{self, PROTOCOL_PATTERN};
use super::reply::Position;
use crate::desired::Desired;
use crate::status::BirdProtocol;

/// How the driver reaches BIRD and how patient it is.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct BirdConfig {
    /// BIRD's control socket (`--bird-socket`).
    pub socket: PathBuf,
    /// The include file (`--bird-include`).
    pub include: PathBuf,
    /// Limit for connecting and reading the greeting.
    pub connect_timeout: Duration,
    /// Limit for one command.
    pub command_timeout: Duration,
    /// First reconnection delay (doubles up to `reconnect_max`).
    pub reconnect_min: Duration,
    /// Longest reconnection delay.
    pub reconnect_max: Duration,
    /// How long BIRD may stay unreachable before the announcer falls back
    /// to the built-in speaker.
    pub grace: Duration,
    /// Delay before retrying a configuration BIRD rejected.
    pub retry_interval: Duration,
    /// How often BIRD's protocol list is refreshed for the status.
    pub poll_interval: Duration,
}

impl BirdConfig {
    /// Defaults for `socket` and `include`.
    pub fn new(socket: PathBuf, include: PathBuf) -> BirdConfig {
        BirdConfig {
            socket,
            include,
            connect_timeout: Duration::from_secs(2),
            command_timeout: Duration::from_secs(30),
            reconnect_min: Duration::from_millis(100),
            reconnect_max: Duration::from_secs(5),
            grace: Duration::from_secs(30),
            retry_interval: Duration::from_secs(5),
            poll_interval: Duration::from_secs(10),
        }
    }
}

/// Why the driver returned.
#[derive(Debug)]
pub(crate) enum BirdExit {
    /// Stop was requested; BIRD was told to withdraw everything.
    Stopped,
    /// BIRD stayed unreachable for the grace period.
    Unreachable(String),
}

/// What the driver tells the announcer's task (see
/// [`crate::Status::apply_bird`] for what each does to the status).
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) enum BirdReport {
    /// A control connection is open, to a BIRD of this version.
    Connected {
        /// From BIRD's greeting.
        version: Option<String>,
    },
    /// The control connection was lost.
    Disconnected(String),
    /// BIRD refused the VIPs, or cannot be reached.
    Failed {
        /// The error.
        message: String,
        /// Where in its configuration BIRD found it.
        position: Option<Position>,
        /// Whether a new error is worth a warning (a refusal) or only a
        /// debug line (BIRD away while reconnecting).
        log: bool,
    },
    /// BIRD runs the include of this generation.
    Configured {
        /// The desired set's generation.
        generation: u64,
        /// Its VIPs.
        vips: BTreeSet<IpAddr>,
        /// vc5's protocols as BIRD listed them after `configure`.
        protocols: Vec<BirdProtocol>,
        /// When BIRD took it.
        at: SystemTime,
        /// From the desired set's request to then.
        latency: Duration,
    },
    /// BIRD's protocols, listed again.
    Protocols(Vec<BirdProtocol>),
    /// Stopped: BIRD withdrew every VIP, or why it could not be told to.
    Stopped(Result<(), String>),
}

impl BirdReport {
    fn failed(e: &BirdError, log: bool) -> BirdReport {
        let position = match e {
            BirdError::Command { position, .. } => position.clone(),
            _ => None,
        };
        BirdReport::Failed {
            message: e.to_string(),
            position,
            log,
        }
    }
}

pub(crate) struct Driver {
    pub cfg: BirdConfig,
    pub desired: watch::Receiver<Arc<Desired>>,
    pub stop: watch::Receiver<bool>,
    /// To the announcer's task. Unbounded: the task reads it while it
    /// drives this future, and a report must never wait.
    pub reports: mpsc::UnboundedSender<BirdReport>,
}

impl Driver {
    /// Runs with an already connected client until stopped or BIRD is gone
    /// for longer than the grace period.
    pub async fn run(mut self, client: BirdClient) -> BirdExit {
        let mut client = Some(client);
        self.connected(client.as_ref());
        // Generation BIRD accepted on the current connection: re-applied
        // after every reconnection, since BIRD may have restarted.
        let mut accepted: Option<u64> = None;
        let mut retry_at: Option<Instant> = None;
        let mut poll_at = Instant::now();
        let mut backoff = self.cfg.reconnect_min;
        let mut unreachable_since: Option<Instant> = None;

        loop {
            if crate::stop_asked(&self.stop) {
                self.withdraw_all(client.take()).await;
                return BirdExit::Stopped;
            }
            let Some(c) = client.as_mut() else {
                // Reconnect, with backoff, within the grace period.
                match BirdClient::connect_with(
                    &self.cfg.socket,
                    self.cfg.connect_timeout,
                    self.cfg.command_timeout,
                )
                .await
                {
                    Ok(c) => {
                        info!(greeting = c.greeting(), "reconnected to BIRD");
                        client = Some(c);
                        self.connected(client.as_ref());
                        accepted = None;
                        retry_at = None;
                        backoff = self.cfg.reconnect_min;
                        unreachable_since = None;
                    }
                    Err(e) => {
                        let since = *unreachable_since.get_or_insert_with(Instant::now);
                        self.report(BirdReport::failed(&e, false));
                        if since.elapsed() >= self.cfg.grace {
                            return BirdExit::Unreachable(e.to_string());
                        }
                        let wait = backoff.min(self.cfg.grace.saturating_sub(since.elapsed()));
                        backoff = (backoff * 2).min(self.cfg.reconnect_max);
                        tokio::select! {
                            _ = tokio::time::sleep(wait) => {}
                            _ = self.stop.changed() => {}
                            r = self.desired.changed() => {
                                // Keep the file current: a BIRD starting now
                                // reads the right VIPs at once.
                                if r.is_ok() {
                                    let d = self.desired.borrow().clone();
                                    if let Err(e) = include::update_async(&self.cfg.include, &d.vips, &d.routes).await {
                                        warn!(error = %e, "cannot write the BIRD include");
                                    }
                                }
                            }
                        }
                    }
                }
                continue;
            };

            let d = self.desired.borrow_and_update().clone();
            let due = retry_at.is_none_or(|t| Instant::now() >= t);
            if accepted != Some(d.generation) && due {
                match self.apply(c, &d).await {
                    Ok(()) => {
                        accepted = Some(d.generation);
                        retry_at = None;
                    }
                    Err(e) if e.is_connection_error() => {
                        warn!(error = %e, "lost BIRD control connection");
                        client = None;
                        self.disconnected(&e);
                        continue;
                    }
                    Err(e) => {
                        retry_at = Some(Instant::now() + self.cfg.retry_interval);
                        self.report(BirdReport::failed(&e, true));
                    }
                }
                // Refresh the protocol list soon after a change.
                poll_at = poll_at.min(Instant::now() + Duration::from_millis(500));
            }
            if Instant::now() >= poll_at {
                poll_at = Instant::now() + self.cfg.poll_interval;
                if let Err(e) = self.refresh_protocols(c).await
                    && e.is_connection_error()
                {
                    client = None;
                    self.disconnected(&e);
                    continue;
                }
            }

            let wake = retry_at.map_or(poll_at, |r| r.min(poll_at));
            let Some(c) = client.as_mut() else { continue };
            tokio::select! {
                _ = self.desired.changed() => {}
                _ = self.stop.changed() => {}
                e = c.closed() => {
                    warn!(error = %e, "BIRD closed the control connection");
                    client = None;
                    self.disconnected(&e);
                }
                _ = tokio::time::sleep_until(wake) => {}
            }
        }
    }

    /// Writes the include for `d` and has BIRD load it.
    async fn apply(&self, c: &mut BirdClient, d: &Desired) -> Result<(), BirdError> {
        let t0 = Instant::now();
        // The attributes come with the VIPs: a changed community is one
        // `configure`, and BIRD's static protocol replaces the route in
        // place (the router sees an UPDATE, never a withdraw).
        include::update_async(&self.cfg.include, &d.vips, &d.routes)
            .await
            .map_err(|source| BirdError::Include {
                path: self.cfg.include.clone(),
                source,
            })?;
        let outcome = c.configure(false).await?;
        // A bird.conf without our include would "succeed" and announce nothing.
        let check = c
            .command(&format!("show protocols \"{PROTOCOL_PATTERN}\""))
            .await?;
        if check.code() == 8003 {
            return Err(BirdError::Command {
                command: "configure".into(),
                code: 8003,
                message: format!(
                    "BIRD has no {PROTOCOL_PATTERN} protocols: its configuration does not include {}",
                    self.cfg.include.display()
                ),
                position: None,
            });
        }
        let now = Instant::now();
        info!(
            generation = d.generation,
            vips = d.vips.len(),
            ?outcome,
            took = ?now - t0,
            "BIRD configured"
        );
        self.report(BirdReport::Configured {
            generation: d.generation,
            vips: d.vips.clone(),
            protocols: parse_protocols(&check),
            at: SystemTime::now(),
            latency: now
                .into_std()
                .saturating_duration_since(d.requested_instant),
        });
        Ok(())
    }

    async fn refresh_protocols(&self, c: &mut BirdClient) -> Result<(), BirdError> {
        let r = c.run("show protocols").await?;
        self.report(BirdReport::Protocols(parse_protocols(&r)));
        Ok(())
    }

    /// The SIGTERM path: an empty include, and BIRD told to load it.
    async fn withdraw_all(&self, client: Option<BirdClient>) {
        let empty = BTreeSet::<IpAddr>::new();
        let routes = self.desired.borrow().routes.clone();
        if let Err(e) = include::update_async(&self.cfg.include, &empty, &routes).await {
            warn!(error = %e, "cannot write the empty include");
        }
        let client = match client {
            Some(c) => Some(c),
            None => BirdClient::connect_with(
                &self.cfg.socket,
                self.cfg.connect_timeout,
                self.cfg.command_timeout,
            )
            .await
            .ok(),
        };
        let result = match client {
            Some(mut c) => c.configure(false).await.map(|_| ()),
            None => Err(BirdError::Closed),
        };
        match &result {
            Ok(()) => info!("all VIPs withdrawn from BIRD"),
            Err(e) => warn!(error = %e, "could not have BIRD withdraw the VIPs"),
        }
        self.report(BirdReport::Stopped(result.map_err(|e| e.to_string())));
    }

    fn connected(&self, c: Option<&BirdClient>) {
        let version = c.and_then(|c| c.version()).map(str::to_owned);
        self.report(BirdReport::Connected { version });
    }

    fn disconnected(&self, e: &BirdError) {
        self.report(BirdReport::Disconnected(e.to_string()));
    }

    fn report(&self, r: BirdReport) {
        // An error means the announcer's task is gone, and with it whoever
        // would read the status.
        let _ = self.reports.send(r);
    }
}

/// The `1002` lines of a `show protocols` reply.
pub(crate) fn parse_protocols(r: &super::reply::Reply) -> Vec<BirdProtocol> {
    r.lines_with(1002)
        .filter_map(|line| {
            let mut f = line.split_whitespace();
            let name = f.next()?.to_owned();
            let proto = f.next()?.to_owned();
            let _table = f.next()?;
            let state = f.next()?.to_owned();
            let _since = f.next();
            let info = f.collect::<Vec<_>>().join(" ");
            Some(BirdProtocol {
                name,
                proto,
                state,
                info,
            })
        })
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::bird::reply::parse_all;

    /// BIRD gone for good, in paused time: reconnection attempts come after
    /// `reconnect_min`, doubling up to `reconnect_max`, the last one at the
    /// end of the grace, and then the driver gives up.
    #[tokio::test]
    async fn reconnection_backs_off_and_gives_up_after_the_grace() {
        let dir = tempfile::tempdir().unwrap();
        let socket = dir.path().join("bird.ctl");
        // A BIRD that greets, then goes away with its socket. Connected in
        // real time: only what follows runs on the paused clock.
        let listener = tokio::net::UnixListener::bind(&socket).unwrap();
        let bird = tokio::spawn(async move {
            use tokio::io::AsyncWriteExt;
            let (mut s, _) = listener.accept().await.unwrap();
            s.write_all(b"0001 BIRD 2.0.12 ready.\n").await.unwrap();
        });
        let client = BirdClient::connect(&socket).await.unwrap();
        bird.await.unwrap();
        std::fs::remove_file(&socket).unwrap();
        tokio::time::pause();

        let mut cfg = BirdConfig::new(socket, dir.path().join("vc5.conf"));
        cfg.reconnect_min = Duration::from_secs(1);
        cfg.reconnect_max = Duration::from_secs(8);
        cfg.grace = Duration::from_secs(60);
        let (_desired_tx, desired) = watch::channel(Arc::new(Desired::first(
            BTreeSet::new(),
            Default::default(),
        )));
        let (_stop_tx, stop) = watch::channel(false);
        let (reports, mut rx) = mpsc::unbounded_channel();
        let t0 = Instant::now();
        // When each report arrives: it runs before the clock moves on.
        let times = tokio::spawn(async move {
            let mut failed = Vec::new();
            let mut disconnected = false;
            while let Some(r) = rx.recv().await {
                match r {
                    BirdReport::Disconnected(_) => disconnected = true,
                    BirdReport::Failed { log, .. } => {
                        assert!(!log, "BIRD away while reconnecting is no warning");
                        // Whole seconds: tokio's timer rounds each sleep up to a ms.
                        failed.push(t0.elapsed().as_secs());
                    }
                    _ => {}
                }
            }
            (disconnected, failed)
        });
        let driver = Driver {
            cfg,
            desired,
            stop,
            reports,
        };
        let exit = driver.run(client).await;
        assert!(matches!(exit, BirdExit::Unreachable(_)), "{exit:?}");
        let gave_up = t0.elapsed();
        assert!(
            gave_up >= Duration::from_secs(60) && gave_up < Duration::from_millis(60_020),
            "gave up at the grace, not {gave_up:?}"
        );
        let (disconnected, failed) = times.await.unwrap();
        assert!(disconnected, "the lost connection is reported");
        // Waits of 1, 2, 4, 8, 8, … s, the last cut to the grace.
        assert_eq!(failed, [0, 1, 3, 7, 15, 23, 31, 39, 47, 55, 60]);
    }

    #[test]
    fn protocols_are_parsed() {
        let r = parse_all(b"2002-Name       Proto      Table      State  Since         Info\n1002-device1    Device     ---        up     06:43:24.511  \n vc5_vips4  Static     master4    up     06:43:24.511  \n r1         BGP        ---        start  06:43:24.511  Active        Socket: Connection refused\n0000 \n")
            .expect("parses");
        let p = parse_protocols(&r[0]);
        assert_eq!(p.len(), 3);
        assert_eq!(p[1].name, "vc5_vips4");
        assert_eq!(p[2].state, "start");
        assert_eq!(p[2].info, "Active Socket: Connection refused");
    }
}
