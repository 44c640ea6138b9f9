//! The D-Bus service `org.vc5.Balancer1` at `/org/vc5/Balancer1`.
//!
//! It is a thin front end over [`Shared`]: reads come from the latest
//! [`Status`] snapshot (never from the control loop itself, so a busy
//! control loop cannot make `busctl` hang), state changes are forwarded as
//! [`Command`]s and their [`CommandError`]s come back as typed D-Bus errors
//! (`org.vc5.Balancer1.Error.*`), and [`Event`]s become signals.
//!
//! Who may do what is decided twice. The bus policy
//! (`dbus/org.vc5.Balancer1.conf`) lets every local user introspect, read
//! the properties and call `ListServices`/`ListReals`, and only root
//! anything else. vc5d then checks again for every state-changing call by
//! asking the bus for the caller's uid, because a policy file can be
//! missing, stale or overridden by a permissive local configuration, and
//! draining a real is not something to leave to the packaging.
//!
//! `dbus/org.vc5.Balancer1.xml` is the interface's documentation of record;
//! a test keeps it equal to what this module exposes. Its signatures were
//! chosen for `busctl call` to print readable rows: flat structs of
//! strings, booleans and integers, one per service endpoint or real.

use crate::status::{Command, CommandError, Event, RealStatus, Shared, Status};
use std::sync::Arc;
use std::time::Duration;
use tokio::sync::broadcast::error::RecvError;
use tokio::task::JoinHandle;
use zbus::message::Header;
use zbus::object_server::{InterfaceRef, SignalEmitter};

/// The well-known bus name, which is also the interface name.
pub const NAME: &str = "org.vc5.Balancer1";
/// The object path of the one object vc5d exports.
pub const PATH: &str = "/org/vc5/Balancer1";

/// Why the service could not be started.
#[derive(Debug, thiserror::Error)]
pub enum DbusError {
    /// The bus could not be reached, or the argument is not a bus address.
    #[error("cannot connect to the D-Bus {bus} bus: {source}")]
    Connect {
        bus: String,
        #[source]
        source: zbus::Error,
    },
    /// Another process (most likely another vc5d) owns the name, or the
    /// bus policy does not let this process own it.
    #[error(
        "cannot own {NAME} on the D-Bus {bus} bus (another vc5d running, or the bus policy \
         dbus/{NAME}.conf not installed?): {source}"
    )]
    Name {
        bus: String,
        #[source]
        source: zbus::Error,
    },
}

/// The running service. Dropping it stops forwarding signals and closes
/// the connection, which releases the bus name.
///
/// A lost bus connection (dbus-daemon restarted, or it dropped vc5d for a
/// message it refused) is re-established: the service connects again with
/// a growing pause (up to [`RECONNECT_MAX`]), owns the name again and goes
/// on serving and signalling. Without that a single lost connection would
/// leave `org.vc5.Balancer1` gone until vc5d restarts.
pub struct DbusService {
    supervisor: JoinHandle<()>,
}

/// The longest pause between two attempts to get the bus back.
pub const RECONNECT_MAX: Duration = Duration::from_secs(10);
/// The first pause after the connection is lost.
const RECONNECT_FIRST: Duration = Duration::from_millis(250);

impl Drop for DbusService {
    fn drop(&mut self) {
        // Aborting the supervisor drops the session it holds, which aborts
        // the session's tasks (they hold clones of the connection; without
        // aborting them the socket and the name would outlive the service).
        self.supervisor.abort();
    }
}

impl std::fmt::Debug for DbusService {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("DbusService").finish_non_exhaustive()
    }
}

/// One connection to the bus with the name owned and the interface served.
struct Session {
    connection: zbus::Connection,
    tasks: Vec<JoinHandle<()>>,
}

impl Drop for Session {
    fn drop(&mut self) {
        for t in &self.tasks {
            t.abort();
        }
    }
}

/// Connects to `bus` (`system`, `session`, `none`, or a D-Bus address such
/// as `unix:path=/run/vc5/bus`), owns [`NAME`] and serves the interface at
/// [`PATH`] until the returned handle is dropped. `none` returns `Ok(None)`.
/// Failing to connect or to own the name here is an error (vc5d does not
/// start); losing the connection later is not (see [`DbusService`]).
pub async fn serve(bus: &str, shared: Shared) -> Result<Option<DbusService>, DbusError> {
    if bus == "none" {
        return Ok(None);
    }
    let first = connect(bus, &shared).await?;
    let supervisor = tokio::spawn(supervise(bus.to_owned(), shared, first));
    Ok(Some(DbusService { supervisor }))
}

/// Keeps a session up: waits until the current one's connection is gone,
/// then connects again until that works.
async fn supervise(bus: String, shared: Shared, mut session: Session) {
    loop {
        let why = lost(&session.connection).await;
        drop(session);
        tracing::error!(bus = %bus, "D-Bus connection lost ({why}); reconnecting");
        let mut pause = RECONNECT_FIRST;
        session = loop {
            tokio::time::sleep(pause).await;
            match connect(&bus, &shared).await {
                Ok(s) => break s,
                Err(e) => {
                    tracing::warn!(bus = %bus, "D-Bus: {e}; next try in {pause:?}");
                    pause = (pause * 2).min(RECONNECT_MAX);
                }
            }
        };
        tracing::info!(bus = %bus, "D-Bus service {NAME} back");
    }
}

/// Returns when the connection is closed or the bus says the name is no
/// longer ours.
async fn lost(connection: &zbus::Connection) -> String {
    use futures_util::StreamExt;
    let rule = zbus::MatchRule::builder()
        .msg_type(zbus::message::Type::Signal)
        .sender("org.freedesktop.DBus")
        .and_then(|r| r.interface("org.freedesktop.DBus"))
        .and_then(|r| r.member("NameLost"))
        .and_then(|r| r.add_arg(NAME))
        .map(|r| r.build());
    let mut stream = match rule {
        Ok(rule) => match zbus::MessageStream::for_match_rule(rule, connection, None).await {
            Ok(s) => s,
            Err(e) => return format!("cannot watch the connection: {e}"),
        },
        Err(e) => return format!("cannot watch the connection: {e}"),
    };
    // The socket reader sends every stream its error, then ends them.
    match stream.next().await {
        Some(Ok(_)) => format!("{NAME} lost"),
        Some(Err(e)) => e.to_string(),
        None => "closed".to_owned(),
    }
}

async fn connect(bus: &str, shared: &Shared) -> Result<Session, DbusError> {
    let connect_err = |source| DbusError::Connect {
        bus: bus.to_owned(),
        source,
    };
    let builder = match bus {
        "system" => zbus::connection::Builder::system().map_err(connect_err)?,
        "session" => zbus::connection::Builder::session().map_err(connect_err)?,
        address => zbus::connection::Builder::address(address).map_err(connect_err)?,
    };
    // Subscribe before anything else so that no event between now and the
    // forwarding task's start is lost.
    let events = shared.events.subscribe();
    let status = shared.status.clone();
    let connection = builder
        .serve_at(
            PATH,
            Balancer {
                shared: shared.clone(),
            },
        )
        .map_err(connect_err)?
        .build()
        .await
        .map_err(connect_err)?;
    // The name is requested here rather than with the builder's `name()`,
    // which (zbus 5.19, contrary to its documentation) does not set
    // DoNotQueue: a second vc5d would silently wait in the queue and take
    // over whenever the first one exits, instead of failing to start.
    connection
        .request_name_with_flags(NAME, zbus::fdo::RequestNameFlags::DoNotQueue.into())
        .await
        .map_err(|source| DbusError::Name {
            bus: bus.to_owned(),
            source,
        })?;
    let iface: InterfaceRef<Balancer> = connection
        .object_server()
        .interface(PATH)
        .await
        .map_err(connect_err)?;
    let tasks = vec![
        tokio::spawn(forward_events(iface.clone(), events)),
        tokio::spawn(watch_announced(iface, status)),
    ];
    Ok(Session { connection, tasks })
}

/// Turns [`Event`]s into signals until the control loop goes away.
async fn forward_events(
    iface: InterfaceRef<Balancer>,
    mut events: tokio::sync::broadcast::Receiver<Event>,
) {
    let emitter = iface.signal_emitter();
    loop {
        let result = match events.recv().await {
            Ok(Event::RealHealth {
                service,
                real,
                healthy,
                reason,
            }) => {
                Balancer::real_health_changed(
                    emitter,
                    &service,
                    &real.to_string(),
                    healthy,
                    &reason,
                )
                .await
            }
            Ok(Event::RealDrain {
                service,
                real,
                drained,
            }) => Balancer::real_drain_changed(emitter, &service, &real.to_string(), drained).await,
            Ok(Event::Vip { vip, announced }) => {
                Balancer::vip_announced(emitter, &vip.to_string(), announced).await
            }
            Err(RecvError::Lagged(n)) => {
                // Signals are a convenience; the state itself is always
                // in ListServices/ListReals, so say so and go on.
                tracing::warn!("D-Bus: {n} events were not signalled (too many at once)");
                continue;
            }
            Err(RecvError::Closed) => return,
        };
        if let Err(e) = result {
            tracing::warn!("D-Bus: cannot emit signal: {e}");
        }
    }
}

/// Emits `PropertiesChanged` for `Announced` whenever the set of announced
/// VIPs in the status differs from the last one seen.
async fn watch_announced(
    iface: InterfaceRef<Balancer>,
    mut status: tokio::sync::watch::Receiver<Arc<Status>>,
) {
    let mut last = announced(&status.borrow_and_update());
    while status.changed().await.is_ok() {
        let now = announced(&status.borrow_and_update());
        if now == last {
            continue;
        }
        last = now;
        let balancer = iface.get().await;
        if let Err(e) = balancer.announced_changed(iface.signal_emitter()).await {
            tracing::warn!("D-Bus: cannot signal the Announced change: {e}");
        }
    }
}

fn announced(status: &Status) -> Vec<String> {
    status
        .vips
        .iter()
        .filter(|v| v.announced)
        .filter_map(|v| v.vip.map(|ip| ip.to_string()))
        .collect()
}

/// The errors callers see, named `org.vc5.Balancer1.Error.<Variant>`; the
/// string is the human-readable message `busctl` prints.
#[derive(Debug, zbus::DBusError)]
#[zbus(prefix = "org.vc5.Balancer1.Error")]
pub enum BalancerError {
    #[zbus(error)]
    ZBus(zbus::Error),
    UnknownService(String),
    UnknownReal(String),
    AlreadyDrained(String),
    NotDrained(String),
    ReloadFailed(String),
    AccessDenied(String),
    Stopping(String),
}

impl From<CommandError> for BalancerError {
    fn from(e: CommandError) -> Self {
        let message = e.to_string();
        match e {
            CommandError::UnknownService(_) => Self::UnknownService(message),
            CommandError::UnknownReal { .. } => Self::UnknownReal(message),
            CommandError::AlreadyDrained { .. } => Self::AlreadyDrained(message),
            CommandError::NotDrained { .. } => Self::NotDrained(message),
            CommandError::Reload(_) => Self::ReloadFailed(message),
            CommandError::Stopping => Self::Stopping(message),
        }
    }
}

/// One row of `ListServices`, signature `(ssqssuuus)`.
type ServiceRow = (String, String, u16, String, String, u32, u32, u32, String);
/// One row of `ListReals`, signature `(ssbbubstttsssq)`.
type RealRow = (
    String,
    String,
    bool,
    bool,
    u32,
    bool,
    String,
    u64,
    u64,
    u64,
    String,
    String,
    String,
    u16,
);

struct Balancer {
    shared: Shared,
}

impl Balancer {
    fn snapshot(&self) -> Arc<Status> {
        self.shared.status.borrow().clone()
    }

    /// Refuses callers that are not uid 0, asking the bus who they are
    /// (the bus learnt it from the socket's credentials, so it cannot be
    /// forged by the caller).
    async fn authorize(
        connection: &zbus::Connection,
        header: &Header<'_>,
        what: &str,
    ) -> Result<(), BalancerError> {
        let Some(sender) = header.sender() else {
            return Err(BalancerError::AccessDenied(format!(
                "{what} needs root, and the caller is unknown"
            )));
        };
        let reply = connection
            .call_method(
                Some("org.freedesktop.DBus"),
                "/org/freedesktop/DBus",
                Some("org.freedesktop.DBus"),
                "GetConnectionUnixUser",
                &(sender.as_str(),),
            )
            .await?;
        let uid: u32 = reply.body().deserialize()?;
        if uid == 0 {
            Ok(())
        } else {
            tracing::warn!("D-Bus: refused {what} from {sender} (uid {uid})");
            Err(BalancerError::AccessDenied(format!(
                "{what} needs root; the caller is uid {uid}"
            )))
        }
    }
}

fn service_rows(status: &Status) -> Vec<ServiceRow> {
    status
        .services
        .iter()
        .map(|s| {
            (
                s.name.clone(),
                s.vip.map(|ip| ip.to_string()).unwrap_or_default(),
                s.port,
                s.protocol.clone(),
                s.state.clone(),
                saturate(s.healthy),
                saturate(s.need),
                saturate(s.total),
                s.forward.clone(),
            )
        })
        .collect()
}

fn saturate(n: usize) -> u32 {
    u32::try_from(n).unwrap_or(u32::MAX)
}

/// The reals of every endpoint of configuration service `name`, one row
/// per address: health, drain and checks are per (service, real), so the
/// first endpoint's are everyone's, while the counters are summed over the
/// endpoints (per-endpoint counters are in `/metrics`).
fn real_rows(status: &Status, name: &str) -> Option<Vec<RealRow>> {
    let mut rows: Vec<RealRow> = Vec::new();
    let mut found = false;
    for service in status.services.iter().filter(|s| s.name == name) {
        found = true;
        for real in &service.reals {
            let addr = real.addr.map(|ip| ip.to_string()).unwrap_or_default();
            if let Some(row) = rows.iter_mut().find(|r| r.0 == addr) {
                row.7 = row.7.saturating_add(real.counters.packets);
                row.8 = row.8.saturating_add(real.counters.bytes);
                row.9 = row.9.saturating_add(real.counters.new_flows);
                continue;
            }
            let (passing, reason) = check_summary(real);
            rows.push((
                addr,
                real.state.clone(),
                real.healthy,
                real.drained,
                real.weight,
                passing,
                reason,
                real.counters.packets,
                real.counters.bytes,
                real.counters.new_flows,
                real.forward.clone(),
                real.next_hop.map(|ip| ip.to_string()).unwrap_or_default(),
                real.mac.clone().unwrap_or_default(),
                real.vlan.unwrap_or(0),
            ));
        }
    }
    found.then_some(rows)
}

/// Whether every check passed last time, and if not why, as
/// `check: reason` for each failing one.
fn check_summary(real: &RealStatus) -> (bool, String) {
    let failing: Vec<String> = real
        .checks
        .iter()
        .filter(|c| !c.passing)
        .map(|c| {
            if c.reason.is_empty() {
                format!("{}: failing", c.name)
            } else {
                format!("{}: {}", c.name, c.reason)
            }
        })
        .collect();
    (failing.is_empty(), failing.join("; "))
}

/// vc5 layer-2 Direct Server Return load balancer. Read-only members are open
/// to every local user; Drain, Undrain and Reload need root.
#[zbus::interface(name = "org.vc5.Balancer1")]
impl Balancer {
    /// ListServices: one row per service endpoint (VIP, port, protocol):
    /// name s (the configuration's service name), vip s, port q,
    /// protocol s ("tcp"|"udp"), state s ("up"|"down"), healthy u (usable
    /// reals), need u (usable reals needed to be up), total u (reals),
    /// forward s ("l2"|"ipip"|"gre"|"fou"|"gue": how packets reach the reals).
    #[zbus(out_args("services"))]
    async fn list_services(&self) -> Vec<ServiceRow> {
        service_rows(&self.snapshot())
    }

    /// ListReals: the reals of a configuration service, one row per
    /// address: address s, state s ("serving"|"drained"|"failed"|"disabled"|
    /// "unresolved"), healthy b, drained b, weight u, passing b (all checks
    /// passed last time), reason s (the failing checks and why, "" when
    /// passing), packets t, bytes t, new_flows t (summed over the service's
    /// endpoints), forward s (the service's method), next_hop s (the gateway,
    /// or the real itself when on-link; "" while unreachable), mac s (the
    /// next hop's MAC, "" while unresolved), vlan q (the 802.1Q VLAN its
    /// frames are tagged with, 0 without `vlans`). Errors: UnknownService.
    #[zbus(out_args("reals"))]
    async fn list_reals(&self, service: String) -> Result<Vec<RealRow>, BalancerError> {
        real_rows(&self.snapshot(), &service)
            .ok_or_else(|| BalancerError::from(CommandError::UnknownService(service.clone())))
    }

    /// Drain: stop sending new flows to a real of a service (established
    /// flows stay). Root only. Errors: AccessDenied, UnknownService,
    /// UnknownReal, AlreadyDrained, Stopping.
    async fn drain(
        &self,
        #[zbus(connection)] connection: &zbus::Connection,
        #[zbus(header)] header: Header<'_>,
        service: String,
        real: String,
    ) -> Result<(), BalancerError> {
        Self::authorize(connection, &header, "Drain").await?;
        tracing::info!("D-Bus: drain {real} of {service}");
        self.shared
            .call(|reply| Command::Drain {
                service,
                real,
                reply,
            })
            .await
            .map_err(Into::into)
    }

    /// Undrain: let a drained real take new flows again. Root only. Errors:
    /// AccessDenied, UnknownService, UnknownReal, NotDrained, Stopping.
    async fn undrain(
        &self,
        #[zbus(connection)] connection: &zbus::Connection,
        #[zbus(header)] header: Header<'_>,
        service: String,
        real: String,
    ) -> Result<(), BalancerError> {
        Self::authorize(connection, &header, "Undrain").await?;
        tracing::info!("D-Bus: undrain {real} of {service}");
        self.shared
            .call(|reply| Command::Undrain {
                service,
                real,
                reply,
            })
            .await
            .map_err(Into::into)
    }

    /// Reload: re-read the configuration file, like SIGHUP. A configuration
    /// that does not validate is refused and the running one stays. Root
    /// only. Errors: AccessDenied, ReloadFailed, Stopping.
    async fn reload(
        &self,
        #[zbus(connection)] connection: &zbus::Connection,
        #[zbus(header)] header: Header<'_>,
    ) -> Result<(), BalancerError> {
        Self::authorize(connection, &header, "Reload").await?;
        tracing::info!("D-Bus: reload");
        self.shared
            .call(|reply| Command::Reload { reply })
            .await
            .map_err(Into::into)
    }

    /// Version: vc5d's version.
    #[zbus(property(emits_changed_signal = "const"))]
    async fn version(&self) -> String {
        let version = &self.snapshot().version;
        // Before the control loop's first snapshot the status is empty;
        // the version is this build's either way.
        if version.is_empty() {
            env!("CARGO_PKG_VERSION").to_owned()
        } else {
            version.clone()
        }
    }

    /// Announced: the VIPs route health injection reports announced now.
    #[zbus(property)]
    async fn announced(&self) -> Vec<String> {
        announced(&self.snapshot())
    }

    /// FlowSync: flow sync as JSON, the flow_sync object of the console's
    /// /status.json: configured, holding_announcements (no VIP announced
    /// until vc5-flowsync has resynced) and holding_until_ms, local (this
    /// host's vc5-flowsync: running, state, sender, epoch, sent counters,
    /// lost_events) and peers (per peer: addr, sender, epoch, datagrams,
    /// records, written, gaps, unknown_real, rate_limited, rejects by
    /// reason, last_heard_ago_ms, delay_p50_us, delay_p99_us,
    /// delay_max_us). Read it again for fresh values.
    #[zbus(property(emits_changed_signal = "false"))]
    async fn flow_sync(&self) -> String {
        serde_json::to_string(&self.snapshot().flow_sync).unwrap_or_else(|_| "{}".to_owned())
    }

    /// RealHealthChanged: a real of a configuration service became healthy
    /// or unhealthy; reason says why it failed (empty when healthy).
    #[zbus(signal)]
    async fn real_health_changed(
        emitter: &SignalEmitter<'_>,
        service: &str,
        real: &str,
        healthy: bool,
        reason: &str,
    ) -> zbus::Result<()>;

    /// RealDrainChanged: a real of a configuration service was drained
    /// (true: no new flows, established ones stay) or undrained (false).
    #[zbus(signal)]
    async fn real_drain_changed(
        emitter: &SignalEmitter<'_>,
        service: &str,
        real: &str,
        drained: bool,
    ) -> zbus::Result<()>;

    /// VipAnnounced: a VIP was announced (true) or withdrawn (false).
    #[zbus(signal)]
    async fn vip_announced(
        emitter: &SignalEmitter<'_>,
        vip: &str,
        announced: bool,
    ) -> zbus::Result<()>;
}
