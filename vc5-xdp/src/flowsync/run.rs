//! The `vc5-flowsync` process: checks its inputs ([`prepare`]), then runs
//! one mio event loop ([`run`]) over the group socket, the `flow_events`
//! ring buffer, a signalfd and timers (the poll's timeout). Nothing in the
//! loop blocks but `poll`: the socket is non-blocking, map calls return at
//! once, dumps and sweeps go in bounded steps.
//!
//! - Before vc5d has created its maps the loop waits, looking every 100 ms;
//!   when vc5d replaces them (the `settings` map's id changed) the loop
//!   reopens them and starts a new epoch (the new maps hold no peer flows).
//! - SIGTERM/SIGINT: `sync_status[0].on = 0`, exit. SIGHUP: re-read the key
//!   file (an invalid one is logged and the old keys stay).

use std::collections::VecDeque;
use std::io;
use std::net::{IpAddr, SocketAddr};
use std::os::fd::{AsRawFd, FromRawFd, OwnedFd};
use std::path::PathBuf;
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

use mio::unix::SourceFd;
use mio::{Events, Interest, Poll, Token};
use tracing::{error, info, warn};

use super::config::{self, ConfigError, FlowSyncConfig};
use super::engine::{
    Engine, EngineConfig, FlowKey, FlowMap, Inbound, Outbound, Plan, Resolved, Resolver,
};
use super::keys::{KeyFileError, Keyring};
use super::net::{self, NetError};
use super::pinned::{Pinned, PinnedError};
use super::wire::FlowRecord;
use crate::dataplane::TCP_IDLE_TIMEOUT;
use crate::maps::{FlowEvent, SYNC_STARTING, Settings};

const SOCKET: Token = Token(0);
const RING: Token = Token(1);
const SIGNALS: Token = Token(2);

const STATUS_EVERY: Duration = Duration::from_millis(250);
const GENERATION_EVERY: Duration = Duration::from_millis(100);
const REOPEN_EVERY: Duration = Duration::from_secs(1);
const SWEEP_EVERY: Duration = Duration::from_secs(30);
const STEP_EVERY: Duration = Duration::from_millis(10);
/// The program wakes this process once per 256 flow events (VC5_EVENT_WAKE
/// in vc5.c: a wake-up per event would cost every inserting packet some
/// 3 us), so a quiet ring is drained on this timer: the most a flow event
/// waits before it is sent.
const RING_POLL: Duration = Duration::from_millis(2);
/// Work done per wake-up before the loop looks at its other sources.
const MAX_DATAGRAMS_PER_TURN: usize = 2048;
const MAX_EVENTS_PER_TURN: usize = 65_536;
const SWEEP_CHUNK: usize = 16_384;
/// Datagrams waiting for room in the socket's send buffer, at most.
const MAX_QUEUED: usize = 16_384;

/// The command line.
#[derive(Debug, Clone)]
pub struct Options {
    pub config: PathBuf,
    pub interface: String,
    pub address: IpAddr,
    pub bpffs: PathBuf,
}

/// Why `vc5-flowsync` cannot start (each is a clear message and a
/// non-zero exit).
#[derive(Debug, thiserror::Error)]
pub enum StartError {
    #[error("{0}")]
    Config(#[from] ConfigError),
    #[error("flow_sync_key: {0}")]
    Key(#[from] KeyFileError),
    #[error("{0}")]
    Net(#[from] NetError),
    #[error("--address {0}: {1}")]
    Address(IpAddr, &'static str),
    #[error("{what}: {source}")]
    Os {
        what: &'static str,
        #[source]
        source: io::Error,
    },
}

/// What the loop needs, checked before it starts.
pub struct Prepared {
    opts: Options,
    cfg: FlowSyncConfig,
    keys: Keyring,
    socket: std::net::UdpSocket,
    signals: OwnedFd,
}

impl std::fmt::Debug for Prepared {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Prepared")
            .field("opts", &self.opts)
            .field("cfg", &self.cfg)
            .finish()
    }
}

/// Reads the configuration and key file, checks the address and the
/// interface, joins the group and takes the signals.
pub fn prepare(opts: Options) -> Result<Prepared, StartError> {
    let a = opts.address;
    if a.is_unspecified() {
        return Err(StartError::Address(a, "the unspecified address"));
    }
    if a.is_multicast() {
        return Err(StartError::Address(a, "a multicast address"));
    }
    if a.is_loopback() {
        return Err(StartError::Address(a, "a loopback address"));
    }
    if let IpAddr::V6(v6) = a
        && v6.to_ipv4_mapped().is_some()
    {
        return Err(StartError::Address(
            a,
            "an IPv4-mapped address: write it as IPv4",
        ));
    }
    let cfg = config::load(&opts.config)?;
    let keys = Keyring::load(&cfg.key_file)?;
    let socket = net::open(cfg.group, &opts.interface, opts.address)?;
    let signals = signalfd()?;
    Ok(Prepared {
        opts,
        cfg,
        keys,
        socket,
        signals,
    })
}

/// Blocks SIGTERM, SIGINT and SIGHUP (this process is single-threaded) and
/// reads them from a signalfd instead.
fn signalfd() -> Result<OwnedFd, StartError> {
    // SAFETY: sigset manipulation on a local set, then sigprocmask and
    // signalfd with valid pointers.
    unsafe {
        let mut set: libc::sigset_t = std::mem::zeroed();
        libc::sigemptyset(&mut set);
        for s in [libc::SIGTERM, libc::SIGINT, libc::SIGHUP] {
            libc::sigaddset(&mut set, s);
        }
        if libc::pthread_sigmask(libc::SIG_BLOCK, &set, std::ptr::null_mut()) != 0 {
            return Err(StartError::Os {
                what: "blocking signals",
                source: io::Error::last_os_error(),
            });
        }
        let fd = libc::signalfd(-1, &set, libc::SFD_NONBLOCK | libc::SFD_CLOEXEC);
        if fd < 0 {
            return Err(StartError::Os {
                what: "signalfd",
                source: io::Error::last_os_error(),
            });
        }
        Ok(OwnedFd::from_raw_fd(fd))
    }
}

fn wall_ms() -> u64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map(|d| d.as_millis() as u64)
        .unwrap_or(0)
}

fn wall_us() -> u64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map(|d| d.as_micros() as u64)
        .unwrap_or(0)
}

fn wall_ns() -> u64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map(|d| d.as_nanos() as u64)
        .unwrap_or(0)
}

/// Logs a recurring warning at most once per interval.
#[derive(Default)]
struct Throttle(Option<Instant>);

impl Throttle {
    fn ready(&mut self) -> bool {
        let now = Instant::now();
        match self.0 {
            Some(t) if now < t => false,
            _ => {
                self.0 = Some(now + Duration::from_secs(10));
                true
            }
        }
    }
}

/// The maps and the protocol while vc5d's maps are there.
struct Live {
    pinned: Pinned,
    engine: Engine,
    resolver: Resolver,
    settings: Settings,
}

struct Loop {
    opts: Options,
    cfg: FlowSyncConfig,
    keys: Keyring,
    poll: Poll,
    socket: mio::net::UdpSocket,
    dest: SocketAddr,
    signals: OwnedFd,
    live: Option<Live>,
    queue: VecDeque<(Vec<u8>, u32)>,
    buf: Vec<u8>,
    ring_pending: bool,
    socket_pending: bool,
    next_open: Instant,
    open_error: Option<String>,
    next_status: Instant,
    next_generation: Instant,
    next_reopen_check: Instant,
    next_sweep: Instant,
    next_step: Instant,
    /// The engine's tick is due by the wall clock, or by this at the latest.
    next_tick: Instant,
    warn_map: Throttle,
    warn_send: Throttle,
    stop: bool,
}

/// Runs until SIGTERM or SIGINT.
pub fn run(p: Prepared) -> io::Result<()> {
    let poll = Poll::new()?;
    let mut socket = mio::net::UdpSocket::from_std(p.socket);
    poll.registry()
        .register(&mut socket, SOCKET, Interest::READABLE | Interest::WRITABLE)?;
    poll.registry().register(
        &mut SourceFd(&p.signals.as_raw_fd()),
        SIGNALS,
        Interest::READABLE,
    )?;
    let now = Instant::now();
    let mut l = Loop {
        dest: net::destination(p.cfg.group, &p.opts.interface),
        opts: p.opts,
        cfg: p.cfg,
        keys: p.keys,
        poll,
        socket,
        signals: p.signals,
        live: None,
        queue: VecDeque::new(),
        buf: vec![0u8; 65_536],
        ring_pending: false,
        socket_pending: false,
        next_open: now,
        open_error: None,
        next_status: now,
        next_generation: now,
        next_reopen_check: now + REOPEN_EVERY,
        next_sweep: now + SWEEP_EVERY,
        next_step: now,
        next_tick: now,
        warn_map: Throttle::default(),
        warn_send: Throttle::default(),
        stop: false,
    };
    info!(
        group = %l.cfg.group,
        interface = %l.opts.interface,
        address = %l.opts.address,
        bpffs = %l.opts.bpffs.display(),
        rate = l.cfg.rate,
        resync_rate = l.cfg.resync_rate,
        "vc5-flowsync starting"
    );
    let mut events = Events::with_capacity(64);
    while !l.stop {
        let timeout = l.timeout();
        if let Err(e) = l.poll.poll(&mut events, Some(timeout)) {
            if e.kind() == io::ErrorKind::Interrupted {
                continue;
            }
            return Err(e);
        }
        for ev in events.iter() {
            match ev.token() {
                SOCKET if ev.is_readable() => l.socket_pending = true,
                RING => l.ring_pending = true,
                SIGNALS => l.signals(),
                _ => {}
            }
        }
        if l.socket_pending {
            l.receive();
        }
        // Every turn, woken by the ring or not: an empty ring costs two
        // memory reads, and a wake-up the ring's adaptive notification
        // skipped (the reader looked busy) then waits no longer than a turn.
        l.drain_ring();
        l.timers();
        l.flush();
    }
    l.shutdown();
    Ok(())
}

impl Loop {
    fn timeout(&self) -> Duration {
        if self.ring_pending || self.socket_pending {
            return Duration::ZERO;
        }
        let now = Instant::now();
        // Only the timers `timers` moves on in the current state count, or
        // a deadline left in the past would spin the loop.
        let mut next = self.next_open;
        if let Some(live) = &self.live {
            next = self
                .next_status
                .min(self.next_generation)
                .min(self.next_reopen_check)
                .min(self.next_sweep);
            if live.engine.dumping() || live.engine.sweeping() {
                next = next.min(self.next_step);
            }
            next = next.min(now + RING_POLL);
            // At least once a second whatever the wall clock does (see
            // Engine::tick).
            let wall = wall_ms();
            let tick = live.engine.next_tick_ms().saturating_sub(wall).min(1000);
            next = next.min(now + Duration::from_millis(tick));
        }
        next.saturating_duration_since(now)
    }

    fn signals(&mut self) {
        loop {
            let mut info = [0u8; std::mem::size_of::<libc::signalfd_siginfo>()];
            // SAFETY: reading into a buffer of one siginfo.
            let n = unsafe {
                libc::read(
                    self.signals.as_raw_fd(),
                    info.as_mut_ptr() as *mut libc::c_void,
                    info.len(),
                )
            };
            if n != info.len() as isize {
                return;
            }
            let signo = u32::from_ne_bytes([info[0], info[1], info[2], info[3]]) as i32;
            match signo {
                libc::SIGHUP => self.reload_keys(),
                libc::SIGTERM | libc::SIGINT => {
                    info!(signal = signo, "stopping");
                    self.stop = true;
                }
                _ => {}
            }
        }
    }

    fn reload_keys(&mut self) {
        match Keyring::load(&self.cfg.key_file) {
            Ok(k) => {
                if let Some(live) = &mut self.live {
                    live.engine.rekey(&k);
                }
                info!(
                    file = %self.cfg.key_file.display(),
                    keys = k.ids().count(),
                    sealing = k.sealing().0,
                    "key file re-read"
                );
                self.keys = k;
            }
            Err(e) => error!(
                file = %self.cfg.key_file.display(),
                error = %e,
                "key file not re-read; the keys in use stay"
            ),
        }
    }

    /// Opens vc5d's maps and starts an epoch.
    fn open(&mut self) {
        let pinned = match Pinned::open(&self.opts.bpffs) {
            Ok(p) => p,
            Err(e) => {
                let msg = e.to_string();
                if self.open_error.as_deref() != Some(&msg) {
                    match e {
                        PinnedError::Missing(_) => {
                            info!(error = %msg, "waiting for vc5d's maps")
                        }
                        _ => error!(error = %msg, "cannot use vc5d's maps (retrying each second)"),
                    }
                    self.open_error = Some(msg);
                }
                // Started with vc5d (a host's boot): its maps appear within
                // a second; looking every 100 ms starts the resync sooner.
                if matches!(e, PinnedError::Missing(_)) {
                    self.next_open = Instant::now() + GENERATION_EVERY;
                }
                return;
            }
        };
        // Maps vc5d created but has not programmed yet (its start-up
        // grace): a resync now would bring flows of services this host
        // does not know yet, dropped as unknown. Look again shortly.
        if pinned.settings().map(|s| s.generation).unwrap_or(0) == 0 {
            let msg = "waiting for vc5d's first programming".to_string();
            if self.open_error.as_deref() != Some(&msg) {
                info!("{msg}");
                self.open_error = Some(msg);
            }
            self.next_open = Instant::now() + GENERATION_EVERY;
            return;
        }
        let resolver = match pinned.resolver() {
            Ok(r) => r,
            Err(e) => {
                error!(error = %e, "reading services and reals from vc5d's maps");
                return;
            }
        };
        let settings = pinned.settings().unwrap_or_default();
        let start_ms = wall_ms();
        let mut engine = Engine::new(
            EngineConfig {
                addr: self.opts.address,
                start_ms,
                epoch: wall_ns(),
                rate: self.cfg.rate,
                resync_rate: self.cfg.resync_rate,
            },
            &self.keys,
        );
        match pinned.peer_moved() {
            Ok(m) => engine.load_moved(m),
            Err(e) => warn!(error = %e, "reading peer_moved"),
        }
        if let Err(e) = self.poll.registry().register(
            &mut SourceFd(&pinned.ring_fd()),
            RING,
            Interest::READABLE,
        ) {
            error!(error = %e, "polling the flow_events ring");
            return;
        }
        info!(
            services = resolver.services(),
            sender = format_args!("{:#x}", engine.sender()),
            epoch = engine.epoch(),
            "maps opened; resyncing"
        );
        self.open_error = None;
        let live = Live {
            pinned,
            engine,
            resolver,
            settings,
        };
        // Status at once: `on` makes the program report flows.
        for (i, s) in live.engine.status(start_ms, 0).iter().enumerate() {
            let _ = live.pinned.write_status(i as u32, s);
        }
        self.live = Some(live);
        self.ring_pending = true;
        let now = Instant::now();
        self.next_sweep = now + SWEEP_EVERY;
        self.next_reopen_check = now + REOPEN_EVERY;
    }

    fn close(&mut self) {
        if let Some(live) = self.live.take() {
            let _ = self
                .poll
                .registry()
                .deregister(&mut SourceFd(&live.pinned.ring_fd()));
        }
        self.ring_pending = false;
    }

    fn receive(&mut self) {
        self.socket_pending = false;
        for _ in 0..MAX_DATAGRAMS_PER_TURN {
            let (n, src) = match self.socket.recv_from(&mut self.buf) {
                Ok(x) => x,
                Err(e) if e.kind() == io::ErrorKind::WouldBlock => return,
                Err(e) if e.kind() == io::ErrorKind::Interrupted => continue,
                Err(e) => {
                    if self.warn_send.ready() {
                        warn!(error = %e, "receiving from the group");
                    }
                    return;
                }
            };
            let Some(live) = &mut self.live else {
                continue; // no maps yet: nothing to do with it
            };
            let now_ms = wall_ms();
            if let Inbound::Flows {
                peer,
                time_ms,
                records,
            } = live.engine.receive(src.ip(), &self.buf[..n], now_ms)
            {
                live.write(peer, time_ms, &records, &mut self.warn_map);
            }
        }
        self.socket_pending = true; // more may be waiting
    }

    fn drain_ring(&mut self) {
        self.ring_pending = false;
        let Some(live) = &mut self.live else { return };
        let mut events = Vec::new();
        {
            let ring = live.pinned.ring();
            while let Some(item) = ring.next() {
                if let Some(e) = FlowEvent::from_bytes(&item) {
                    events.push(e);
                }
                if events.len() >= MAX_EVENTS_PER_TURN {
                    self.ring_pending = true;
                    break;
                }
            }
        }
        if events.is_empty() {
            return;
        }
        tracing::debug!(events = events.len(), "flow events");
        let mut records = Vec::with_capacity(events.len());
        let mut unknown = Vec::new();
        for e in &events {
            match live.resolver.event_record(e) {
                Some(r) => records.push(r),
                None => unknown.push(*e),
            }
        }
        // A backend we do not know yet: vc5d may have programmed it since
        // we last looked.
        if !unknown.is_empty() && live.refresh(&mut self.warn_map) {
            records.extend(unknown.iter().filter_map(|e| live.resolver.event_record(e)));
        }
        let out = live.engine.seal(&records, wall_ms());
        self.enqueue(out);
    }

    fn enqueue(&mut self, out: Outbound) {
        for d in out {
            if self.queue.len() >= MAX_QUEUED {
                if let Some(live) = &mut self.live {
                    live.engine.unsent(d.1 as u64);
                }
                continue;
            }
            self.queue.push_back(d);
        }
    }

    fn flush(&mut self) {
        while let Some((d, n)) = self.queue.front() {
            match self.socket.send_to(d, self.dest) {
                Ok(_) => {
                    self.queue.pop_front();
                }
                Err(e) if e.kind() == io::ErrorKind::WouldBlock => return, // WRITABLE wakes us
                Err(e) if e.kind() == io::ErrorKind::Interrupted => {}
                Err(e) => {
                    if self.warn_send.ready() {
                        warn!(error = %e, group = %self.dest, "sending to the group");
                    }
                    let n = *n as u64;
                    if let Some(live) = &mut self.live {
                        live.engine.unsent(n);
                    }
                    self.queue.pop_front();
                }
            }
        }
    }

    fn timers(&mut self) {
        let now = Instant::now();
        if self.live.is_none() {
            if now >= self.next_open {
                self.next_open = now + REOPEN_EVERY;
                self.open();
            }
            return;
        }
        if now >= self.next_reopen_check {
            self.next_reopen_check = now + REOPEN_EVERY;
            if self.live.as_ref().is_some_and(|l| l.pinned.replaced()) {
                warn!("vc5d replaced its maps: reopening them (a new epoch)");
                self.close();
                self.open();
                return;
            }
        }
        let mut out = Vec::new();
        let live = self.live.as_mut().expect("checked above");
        if now >= self.next_generation {
            self.next_generation = now + GENERATION_EVERY;
            live.refresh(&mut self.warn_map);
        }
        let wall = wall_ms();
        if wall >= live.engine.next_tick_ms() || now >= self.next_tick {
            self.next_tick = now + Duration::from_secs(1);
            let was = live.engine.state();
            out.extend(live.engine.tick(wall));
            if was != live.engine.state() {
                let after = wall.saturating_sub(live.engine.started_ms());
                info!(after_ms = after, "resync done");
            }
        }
        if now >= self.next_sweep {
            self.next_sweep = now + SWEEP_EVERY;
            live.engine.start_sweep();
        }
        if now >= self.next_step {
            self.next_step = now + STEP_EVERY;
            live.dump_step(wall, &mut out, &mut self.warn_map);
            live.sweep_step(&mut self.warn_map);
        }
        if now >= self.next_status {
            self.next_status = now + STATUS_EVERY;
            live.publish(wall, &mut self.warn_map);
        }
        self.enqueue(out);
    }

    fn shutdown(&mut self) {
        self.flush();
        if let Some(live) = &self.live {
            let mut s = live.engine.status(wall_ms(), live.pinned.events_lost());
            s[0].on = 0;
            s[0].state = SYNC_STARTING;
            if let Err(e) = live.pinned.write_status(0, &s[0]) {
                warn!(error = %e, "clearing sync_status[0].on");
            }
        }
    }
}

impl Live {
    /// Re-reads the settings and, when the generation moved, the services,
    /// reals and tables; a table change also starts a sweep, which
    /// rebuilds `peer_moved` against the new tables. Returns whether the
    /// resolver changed.
    fn refresh(&mut self, warn: &mut Throttle) -> bool {
        let s = match self.pinned.settings() {
            Ok(s) => s,
            Err(e) => {
                if warn.ready() {
                    warn!(error = %e, "reading settings");
                }
                return false;
            }
        };
        self.settings = s;
        if s.generation == self.resolver.generation {
            return false;
        }
        match self.pinned.resolver() {
            Ok(r) => {
                self.resolver = r;
                self.engine.restart_sweep();
                true
            }
            Err(e) => {
                if warn.ready() {
                    warn!(error = %e, "re-reading services and reals");
                }
                false
            }
        }
    }

    /// Writes a peer's accepted records: `peer_moved` bits first, then the
    /// flows; then, if vc5d programmed meanwhile, the same records again
    /// against what it programmed.
    fn write(&mut self, peer: usize, time_ms: u64, records: &[FlowRecord], warn: &mut Throttle) {
        // A record this host cannot place may name what vc5d programmed
        // since the last look (its first programming, say): look again
        // before counting it unknown. One settings read per such datagram.
        if records
            .iter()
            .any(|r| matches!(self.resolver.resolve(r), Resolved::Unknown))
        {
            self.refresh(warn);
        }
        let plan = self
            .engine
            .plan(peer, records, &self.resolver, self.settings.clock);
        let written = self.apply(&plan, warn);
        self.engine.written(peer, written, time_ms, wall_us());
        if plan.writes() > 0 && self.refresh(warn) {
            // Quietly (no peer): counted once already.
            let again = self
                .engine
                .plan(usize::MAX, records, &self.resolver, self.settings.clock);
            self.apply(&again, warn);
            let mut gone: [Vec<FlowKey>; 4] = Default::default();
            for r in records {
                if let (Resolved::Unknown, Some(k), Some(m)) = (
                    self.resolver.resolve(r),
                    FlowKey::of(r),
                    FlowMap::of(r.saddr.is_ipv6(), r.protocol),
                ) {
                    gone[m as usize].push(k);
                }
            }
            for m in FlowMap::ALL {
                if !gone[m as usize].is_empty() {
                    self.pinned.delete_peers(m, &gone[m as usize]);
                }
            }
        }
    }

    fn apply(&mut self, plan: &Plan, warn: &mut Throttle) -> usize {
        for (s, m) in &plan.moved {
            if let Err(e) = self.pinned.write_peer_moved(*s, m)
                && warn.ready()
            {
                warn!(service = s, error = %e, "writing peer_moved");
            }
        }
        let mut written = 0;
        for m in FlowMap::ALL {
            if !plan.upserts[m as usize].is_empty() {
                written += self.pinned.write_peers(m, &plan.upserts[m as usize]);
            }
            if !plan.deletes[m as usize].is_empty() {
                self.pinned.delete_peers(m, &plan.deletes[m as usize]);
            }
        }
        written
    }

    /// One paced step of the dump answering peers' hellos.
    fn dump_step(&mut self, wall: u64, out: &mut Outbound, warn: &mut Throttle) {
        if !self.engine.dumping() {
            return;
        }
        let Some((map, mut cursor, max)) = self.engine.dump_step(wall, out) else {
            return;
        };
        let mut entries = Vec::new();
        if let Err(e) = self
            .pinned
            .read_flows(false, map, &mut cursor, max, &mut entries)
        {
            if warn.ready() {
                warn!(map = map.suffix(), error = %e, "reading local flows for a dump");
            }
            cursor.done = true;
        }
        let clock = self.settings.clock;
        let records: Vec<_> = entries
            .iter()
            .filter(|(_, f)| f.seen > clock || clock - f.seen <= TCP_IDLE_TIMEOUT)
            .filter_map(|(k, f)| self.resolver.record(map, k, f.backend))
            .collect();
        out.extend(
            self.engine
                .dump_progress(cursor, entries.len(), &records, wall),
        );
    }

    /// One step of the peer-table sweep.
    fn sweep_step(&mut self, warn: &mut Throttle) {
        let Some(sw) = self.engine.sweep_mut() else {
            return;
        };
        let (i, mut cursor) = (sw.map, sw.cursor);
        if i < FlowMap::ALL.len() {
            let map = FlowMap::ALL[i];
            let mut entries = Vec::new();
            if let Err(e) =
                self.pinned
                    .read_flows(true, map, &mut cursor, SWEEP_CHUNK, &mut entries)
            {
                if warn.ready() {
                    warn!(map = map.suffix(), error = %e, "sweeping peer flows");
                }
                cursor.done = true;
            }
            let clock = self.settings.clock;
            let dead: Vec<FlowKey> = entries
                .iter()
                .filter(|(k, f)| self.engine.sweep_visit(map, k, f, clock, &self.resolver))
                .map(|(k, _)| *k)
                .collect();
            if !dead.is_empty() {
                self.pinned.delete_peers(map, &dead);
            }
            let sw = self.engine.sweep_mut().expect("still sweeping");
            sw.cursor = cursor;
            if cursor.done {
                sw.map += 1;
                sw.cursor = Default::default();
            }
            return;
        }
        let (deleted, kept) = (sw.deleted, sw.kept);
        let moved = self.engine.finish_sweep();
        for (s, m) in &moved {
            if let Err(e) = self.pinned.write_peer_moved(*s, m)
                && warn.ready()
            {
                warn!(service = s, error = %e, "writing peer_moved");
            }
        }
        if deleted > 0 {
            info!(deleted, kept, "swept peer flows");
        }
    }

    fn publish(&mut self, wall: u64, warn: &mut Throttle) {
        let lost = self.pinned.events_lost();
        for (i, s) in self.engine.status(wall, lost).iter().enumerate() {
            if let Err(e) = self.pinned.write_status(i as u32, s)
                && warn.ready()
            {
                warn!(error = %e, "publishing sync_status");
            }
        }
    }
}
