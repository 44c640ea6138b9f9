//! The HTTP console: an HTML page for people, `/status.json` for scripts
//! and `/metrics` for Prometheus, all read from the latest [`Status`]
//! snapshot on the control loop's `watch` channel.
//!
//! | path | what |
//! | --- | --- |
//! | `GET /` | the console page (HTML, CSS and JS embedded, no external assets); it polls `/status.json` every second and redraws in place, computing traffic rates and their graphs from successive counter snapshots |
//! | `GET /status.json` | the [`Status`] as JSON |
//! | `GET /metrics` | Prometheus text format 0.0.4 |
//!
//! Everything else is 404 (405 for a known path with another method). The
//! console is read-only: nothing here changes vc5d's state, because it has
//! no authentication (state changes go through D-Bus, which knows who is
//! asking). It binds `127.0.0.1:8080` by default; exposing it further is
//! the operator's decision (`--console`).
//!
//! The metrics are rendered by `prometheus-client` through a custom
//! collector over one snapshot, so a scrape reports the control loop's
//! counters exactly (nothing is re-counted here) and all of one scrape's
//! values come from the same instant.

use crate::status::{Shared, Status};
use http_body_util::Full;
use hyper::body::{Bytes, Incoming};
use hyper::header::{self, HeaderValue};
use hyper::{Method, Request, Response, StatusCode};
use hyper_util::rt::{TokioIo, TokioTimer};
use std::convert::Infallible;
use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Duration;
use tokio::net::TcpListener;
use tokio::sync::watch;
use tokio::task::{JoinHandle, JoinSet};

/// The page, its style sheet and its script, kept as separate files for
/// editing and joined into one response so that the page loads in one
/// request and works with no other asset.
const PAGE_HTML: &str = include_str!("console/index.html");
const PAGE_CSS: &str = include_str!("console/console.css");
const PAGE_JS: &str = include_str!("console/console.js");

/// A client that sends no complete request head within this long is
/// dropped, so idle connections cannot pile up.
const HEADER_TIMEOUT: Duration = Duration::from_secs(10);

/// At most this many console connections are open at once; one more is
/// closed as soon as it is accepted. A console serves a few browsers and a
/// scraper: the bound keeps a local user who opens thousands of idle
/// connections from taking the file descriptors that health checks, BGP
/// and BIRD need (each idle one is also dropped after `HEADER_TIMEOUT`).
pub const MAX_CONNECTIONS: usize = 128;

/// Why the console could not start.
#[derive(Debug, thiserror::Error)]
pub enum ConsoleError {
    #[error("cannot listen for the console on {addr}: {source}")]
    Bind {
        addr: SocketAddr,
        #[source]
        source: std::io::Error,
    },
}

/// The running console. Dropping it closes the listener and every open
/// connection.
#[derive(Debug)]
pub struct ConsoleHandle {
    addr: SocketAddr,
    task: JoinHandle<()>,
}

impl ConsoleHandle {
    /// The address actually bound (useful with port 0).
    pub fn local_addr(&self) -> SocketAddr {
        self.addr
    }
}

impl Drop for ConsoleHandle {
    fn drop(&mut self) {
        // Aborting the accept task drops its JoinSet, which aborts the
        // connections it spawned.
        self.task.abort();
    }
}

/// Listens on `addr` and serves the console until the handle is dropped.
pub async fn serve(addr: SocketAddr, shared: Shared) -> Result<ConsoleHandle, ConsoleError> {
    let bind_err = |source| ConsoleError::Bind { addr, source };
    let listener = TcpListener::bind(addr).await.map_err(bind_err)?;
    let local = listener.local_addr().map_err(bind_err)?;
    let page: Arc<str> = page().into();
    let status = shared.status;
    let task = tokio::spawn(async move {
        let mut connections = JoinSet::new();
        loop {
            tokio::select! {
                accepted = listener.accept() => match accepted {
                    Ok((stream, peer)) if connections.len() >= MAX_CONNECTIONS => {
                        // Closing at once frees the descriptor; leaving it in
                        // the backlog would only delay the same refusal.
                        tracing::debug!("console: {peer}: refused, {MAX_CONNECTIONS} connections open");
                        drop(stream);
                    }
                    Ok((stream, _peer)) => {
                        connections.spawn(connection(stream, status.clone(), page.clone()));
                    }
                    Err(e) => {
                        // EMFILE and friends: back off instead of spinning;
                        // established connections keep being served.
                        tracing::warn!("console: accept: {e}");
                        tokio::time::sleep(Duration::from_millis(100)).await;
                    }
                },
                // Reap finished connections so the set does not grow.
                Some(_) = connections.join_next(), if !connections.is_empty() => {}
            }
        }
    });
    Ok(ConsoleHandle { addr: local, task })
}

fn page() -> String {
    PAGE_HTML
        .replacen("/*CONSOLE_CSS*/", PAGE_CSS, 1)
        .replacen("/*CONSOLE_JS*/", PAGE_JS, 1)
}

async fn connection(
    stream: tokio::net::TcpStream,
    status: watch::Receiver<Arc<Status>>,
    page: Arc<str>,
) {
    let service = hyper::service::service_fn(move |req: Request<Incoming>| {
        let response = respond(&req, &status, &page);
        async move { Ok::<_, Infallible>(response) }
    });
    let result = hyper::server::conn::http1::Builder::new()
        .timer(TokioTimer::new())
        .header_read_timeout(HEADER_TIMEOUT)
        .serve_connection(TokioIo::new(stream), service)
        .await;
    if let Err(e) = result {
        // Clients going away mid-response are normal for a browser tab.
        tracing::debug!("console: connection: {e}");
    }
}

fn respond(
    req: &Request<Incoming>,
    status: &watch::Receiver<Arc<Status>>,
    page: &str,
) -> Response<Full<Bytes>> {
    let path = req.uri().path();
    let known = matches!(path, "/" | "/status.json" | "/metrics");
    if !known {
        return plain(StatusCode::NOT_FOUND, "not found\n");
    }
    if req.method() != Method::GET && req.method() != Method::HEAD {
        let mut r = plain(StatusCode::METHOD_NOT_ALLOWED, "method not allowed\n");
        r.headers_mut()
            .insert(header::ALLOW, HeaderValue::from_static("GET, HEAD"));
        return r;
    }
    // One snapshot per request: cheap (an Arc) and consistent.
    let snapshot = status.borrow().clone();
    match path {
        "/" => {
            let mut r = body(
                StatusCode::OK,
                "text/html; charset=utf-8",
                page.as_bytes().to_vec(),
            );
            // The page is inline HTML, CSS and JS that talks only to this
            // origin; say so, so that nothing else can ever be loaded.
            r.headers_mut().insert(
                header::CONTENT_SECURITY_POLICY,
                HeaderValue::from_static(
                    "default-src 'none'; script-src 'unsafe-inline'; style-src 'unsafe-inline'; \
                     connect-src 'self'; img-src data:; frame-ancestors 'none'",
                ),
            );
            r
        }
        "/status.json" => match serde_json::to_vec(&*snapshot) {
            Ok(json) => body(StatusCode::OK, "application/json", json),
            Err(e) => plain(
                StatusCode::INTERNAL_SERVER_ERROR,
                &format!("cannot encode the status: {e}\n"),
            ),
        },
        _ => match metrics::render(snapshot) {
            Ok(text) => body(
                StatusCode::OK,
                prometheus_client::encoding::prometheus_text::CONTENT_TYPE,
                text.into_bytes(),
            ),
            Err(e) => plain(
                StatusCode::INTERNAL_SERVER_ERROR,
                &format!("cannot encode the metrics: {e}\n"),
            ),
        },
    }
}

fn body(code: StatusCode, content_type: &'static str, bytes: Vec<u8>) -> Response<Full<Bytes>> {
    let mut r = Response::new(Full::new(Bytes::from(bytes)));
    *r.status_mut() = code;
    let h = r.headers_mut();
    h.insert(header::CONTENT_TYPE, HeaderValue::from_static(content_type));
    // Everything here is live state: never serve it from a cache.
    h.insert(header::CACHE_CONTROL, HeaderValue::from_static("no-store"));
    h.insert(
        header::X_CONTENT_TYPE_OPTIONS,
        HeaderValue::from_static("nosniff"),
    );
    r
}

fn plain(code: StatusCode, text: &str) -> Response<Full<Bytes>> {
    body(code, "text/plain; charset=utf-8", text.as_bytes().to_vec())
}

/// `/metrics`: a `prometheus-client` collector over one [`Status`].
pub mod metrics {
    use crate::status::{Counter, FlowCounters, FlowSyncPeer, ServiceStatus, Status};
    use prometheus_client::collector::Collector;
    use prometheus_client::encoding::{DescriptorEncoder, NoLabelSet};
    use prometheus_client::metrics::MetricType;
    use prometheus_client::registry::Registry;
    use std::collections::BTreeMap;
    use std::fmt::Error;
    use std::sync::Arc;

    type Labels = Vec<(&'static str, String)>;
    /// A metric family's name, help and how to get its value from `T`.
    type Getter<T> = (&'static str, &'static str, fn(&T) -> u64);

    /// Renders `status` in the Prometheus text format (0.0.4).
    pub fn render(status: Arc<Status>) -> Result<String, Error> {
        let mut registry = Registry::default();
        registry.register_collector(Box::new(Snapshot(status)));
        let mut text = String::new();
        prometheus_client::encoding::prometheus_text::encode(&mut text, &registry)?;
        Ok(text)
    }

    #[derive(Debug)]
    struct Snapshot(Arc<Status>);

    /// One metric family: its name (without `_total`, which the encoder
    /// adds to counters), help, type and samples.
    fn family<V: Copy + Into<Value>>(
        enc: &mut DescriptorEncoder,
        name: &str,
        help: &str,
        kind: MetricType,
        samples: impl IntoIterator<Item = (Labels, V)>,
    ) -> Result<(), Error> {
        let mut metric = enc.encode_descriptor(name, help, None, kind)?;
        for (labels, value) in samples {
            let mut sample = metric.encode_family(&labels)?;
            match (kind, value.into()) {
                (MetricType::Counter, Value::U(v)) => {
                    sample.encode_counter::<NoLabelSet, _, u64>(&v, None)?
                }
                (MetricType::Counter, Value::F(v)) => {
                    sample.encode_counter::<NoLabelSet, _, f64>(&v, None)?
                }
                (_, Value::U(v)) => sample.encode_gauge(&v)?,
                (_, Value::F(v)) => sample.encode_gauge(&v)?,
            }
        }
        Ok(())
    }

    #[derive(Clone, Copy)]
    enum Value {
        U(u64),
        F(f64),
    }
    impl From<u64> for Value {
        fn from(v: u64) -> Self {
            Value::U(v)
        }
    }
    impl From<f64> for Value {
        fn from(v: f64) -> Self {
            Value::F(v)
        }
    }
    impl From<bool> for Value {
        fn from(v: bool) -> Self {
            Value::U(u64::from(v))
        }
    }

    fn ip(addr: Option<std::net::IpAddr>) -> String {
        addr.map(|a| a.to_string()).unwrap_or_default()
    }

    fn service_labels(s: &ServiceStatus) -> Labels {
        vec![
            ("service", s.name.clone()),
            ("vip", ip(s.vip)),
            ("port", s.port.to_string()),
            ("protocol", s.protocol.clone()),
        ]
    }

    fn with(mut labels: Labels, key: &'static str, value: String) -> Labels {
        labels.push((key, value));
        labels
    }

    fn seconds(ms: u64) -> f64 {
        // Milliseconds since 1970 are exact in an f64 for millions of years.
        ms as f64 / 1000.0
    }

    /// Per-VIP totals: the sum over the VIP's service endpoints.
    #[derive(Default, Clone, Copy)]
    struct VipTotals {
        flows: FlowCounters,
        dropped: Counter,
    }

    impl Collector for Snapshot {
        fn encode(&self, mut enc: DescriptorEncoder) -> Result<(), Error> {
            let st = &*self.0;
            let e = &mut enc;
            use MetricType::{Counter as C, Gauge as G};

            family(
                e,
                "vc5_build_info",
                "vc5d's version, as a label; always 1.",
                G,
                [(vec![("version", st.version.clone())], 1u64)],
            )?;
            family(
                e,
                "vc5_start_time_seconds",
                "When vc5d started, in seconds since the Unix epoch.",
                G,
                [(Labels::new(), seconds(st.started_ms))],
            )?;
            family(
                e,
                "vc5_status_time_seconds",
                "When the control loop took the snapshot these values come from.",
                G,
                [(Labels::new(), seconds(st.at_ms))],
            )?;
            family(
                e,
                "vc5_ready",
                "1 once start-up is over (the data plane first programmed), 0 before.",
                G,
                [(Labels::new(), st.ready_ms.is_some())],
            )?;
            family(
                e,
                "vc5_config_reloads",
                "Reloads of the configuration, by result (done, refused).",
                C,
                [
                    (vec![("result", "done".to_string())], st.reloads.done),
                    (vec![("result", "refused".to_string())], st.reloads.refused),
                ],
            )?;
            family(
                e,
                "vc5_config_last_reload_successful",
                "0 when the last reload was refused (the running configuration stayed), else 1.",
                G,
                [(Labels::new(), st.reloads.last.as_ref().is_none_or(|l| l.ok))],
            )?;
            family(
                e,
                "vc5_interface_info",
                "XDP attachments: interface and mode (native, generic or pinned); always 1.",
                G,
                st.interfaces.iter().map(|i| {
                    (
                        vec![("interface", i.name.clone()), ("mode", i.mode.clone())],
                        1u64,
                    )
                }),
            )?;

            // VIPs: every VIP of the status, with counters summed over its
            // endpoints (a VIP with no endpoint left still reports zeros).
            let mut vips: BTreeMap<String, VipTotals> = BTreeMap::new();
            for v in &st.vips {
                vips.entry(ip(v.vip)).or_default();
            }
            for s in &st.services {
                let t = vips.entry(ip(s.vip)).or_default();
                t.flows.packets = t.flows.packets.saturating_add(s.counters.packets);
                t.flows.bytes = t.flows.bytes.saturating_add(s.counters.bytes);
                t.flows.new_flows = t.flows.new_flows.saturating_add(s.counters.new_flows);
                t.dropped.packets = t.dropped.packets.saturating_add(s.dropped.packets);
                t.dropped.bytes = t.dropped.bytes.saturating_add(s.dropped.bytes);
            }
            let vip_label = |v: &String| vec![("vip", v.clone())];
            let per_vip: [Getter<VipTotals>; 5] = [
                ("vc5_vip_packets", "Packets sent to a VIP's reals.", |t| {
                    t.flows.packets
                }),
                ("vc5_vip_bytes", "Bytes sent to a VIP's reals.", |t| {
                    t.flows.bytes
                }),
                ("vc5_vip_new_flows", "New flows to a VIP.", |t| {
                    t.flows.new_flows
                }),
                (
                    "vc5_vip_dropped_packets",
                    "Packets to a VIP dropped because no real was usable.",
                    |t| t.dropped.packets,
                ),
                (
                    "vc5_vip_dropped_bytes",
                    "Bytes to a VIP dropped because no real was usable.",
                    |t| t.dropped.bytes,
                ),
            ];
            for (name, help, get) in per_vip {
                family(
                    e,
                    name,
                    help,
                    C,
                    vips.iter().map(|(v, t)| (vip_label(v), get(t))),
                )?;
            }
            family(
                e,
                "vc5_vip_announceable",
                "1 when every service on every port of the VIP is up.",
                G,
                st.vips
                    .iter()
                    .map(|v| (vip_label(&ip(v.vip)), v.announceable)),
            )?;
            family(
                e,
                "vc5_vip_announced",
                "1 when route health injection reports the VIP announced.",
                G,
                st.vips.iter().map(|v| (vip_label(&ip(v.vip)), v.announced)),
            )?;

            // Service endpoints.
            let per_service: [Getter<ServiceStatus>; 5] = [
                (
                    "vc5_service_packets",
                    "Packets sent to a service's reals.",
                    |s| s.counters.packets,
                ),
                (
                    "vc5_service_bytes",
                    "Bytes sent to a service's reals.",
                    |s| s.counters.bytes,
                ),
                ("vc5_service_new_flows", "New flows to a service.", |s| {
                    s.counters.new_flows
                }),
                (
                    "vc5_service_dropped_packets",
                    "Packets to a service dropped because no real was usable.",
                    |s| s.dropped.packets,
                ),
                (
                    "vc5_service_dropped_bytes",
                    "Bytes to a service dropped because no real was usable.",
                    |s| s.dropped.bytes,
                ),
            ];
            for (name, help, get) in per_service {
                family(
                    e,
                    name,
                    help,
                    C,
                    st.services.iter().map(|s| (service_labels(s), get(s))),
                )?;
            }
            let service_gauges: [Getter<ServiceStatus>; 4] = [
                (
                    "vc5_service_up",
                    "1 while at least `need` reals are healthy.",
                    |s| u64::from(s.state == "up"),
                ),
                (
                    "vc5_service_healthy_reals",
                    "Reals usable for new flows.",
                    |s| s.healthy as u64,
                ),
                (
                    "vc5_service_need_reals",
                    "Healthy reals needed for the service to be up.",
                    |s| s.need as u64,
                ),
                (
                    "vc5_service_reals",
                    "Reals configured for the service.",
                    |s| s.total as u64,
                ),
            ];
            for (name, help, get) in service_gauges {
                family(
                    e,
                    name,
                    help,
                    G,
                    st.services.iter().map(|s| (service_labels(s), get(s))),
                )?;
            }

            // Reals, per service endpoint.
            let reals = || {
                st.services.iter().flat_map(|s| {
                    s.reals
                        .iter()
                        .map(move |r| (with(service_labels(s), "real", ip(r.addr)), r))
                })
            };
            family(
                e,
                "vc5_real_packets",
                "Packets sent to a real.",
                C,
                reals().map(|(l, r)| (l, r.counters.packets)),
            )?;
            family(
                e,
                "vc5_real_bytes",
                "Bytes sent to a real.",
                C,
                reals().map(|(l, r)| (l, r.counters.bytes)),
            )?;
            family(
                e,
                "vc5_real_new_flows",
                "New flows sent to a real.",
                C,
                reals().map(|(l, r)| (l, r.counters.new_flows)),
            )?;
            family(
                e,
                "vc5_real_healthy",
                "1 when the real's checks pass.",
                G,
                reals().map(|(l, r)| (l, r.healthy)),
            )?;
            family(
                e,
                "vc5_real_drained",
                "1 when the real is drained (no new flows).",
                G,
                reals().map(|(l, r)| (l, r.drained)),
            )?;
            family(
                e,
                "vc5_real_disabled",
                "1 when the real is disabled in the configuration.",
                G,
                reals().map(|(l, r)| (l, r.disabled)),
            )?;
            family(
                e,
                "vc5_real_weight",
                "The real's weight for new flows.",
                G,
                reals().map(|(l, r)| (l, u64::from(r.weight))),
            )?;
            family(
                e,
                "vc5_real_serving",
                "1 when the real takes new flows (state serving).",
                G,
                reals().map(|(l, r)| (l, r.state == "serving")),
            )?;

            family(
                e,
                "vc5_real_forward_info",
                "How packets reach the real: forward (l2, ipip, gre, fou, gue), next_hop (the gateway, or the real itself when on-link; empty while unreachable), mac (the next hop's) and vlan (the 802.1Q VLAN of its frames; empty without vlans); always 1.",
                G,
                reals().map(|(l, r)| {
                    let l = with(l, "forward", r.forward.clone());
                    let l = with(l, "next_hop", ip(r.next_hop));
                    let l = with(l, "mac", r.mac.clone().unwrap_or_default());
                    let vlan = r.vlan.map(|v| v.to_string()).unwrap_or_default();
                    (with(l, "vlan", vlan), 1u64)
                }),
            )?;

            // Checks, per real.
            let checks = || {
                reals().flat_map(|(l, r)| {
                    r.checks
                        .iter()
                        .map(move |c| (with(l.clone(), "check", c.name.clone()), c))
                })
            };
            family(
                e,
                "vc5_check_passing",
                "1 when the check passes (its state after rise and fall, not its last attempt).",
                G,
                checks().map(|(l, c)| (l, c.passing)),
            )?;
            family(
                e,
                "vc5_check_latency_seconds",
                "How long the check's last attempt took.",
                G,
                checks().map(|(l, c)| (l, c.latency_ms / 1000.0)),
            )?;
            family(
                e,
                "vc5_check_time_seconds",
                "When the check was last attempted (0: not yet).",
                G,
                checks().map(|(l, c)| (l, seconds(c.at_ms))),
            )?;

            // Route health injection.
            let mode = &st.rhi.mode;
            family(
                e,
                "vc5_rhi_session_up",
                "1 when the BIRD connection or BGP session is up/established.",
                G,
                st.rhi
                    .sessions
                    .iter()
                    .map(|s| (vec![("mode", mode.clone()), ("peer", s.peer.clone())], s.up)),
            )?;
            family(
                e,
                "vc5_rhi_session_info",
                "The session's state as a label (e.g. established, connect, idle; up or down for BIRD); always 1.",
                G,
                st.rhi.sessions.iter().map(|s| {
                    (
                        vec![
                            ("mode", mode.clone()),
                            ("peer", s.peer.clone()),
                            ("state", s.state.clone()),
                        ],
                        1u64,
                    )
                }),
            )?;

            // Flow sync.
            let fs = &st.flow_sync;
            let one = |v: u64| [(Labels::new(), v)];
            family(
                e,
                "vc5_flowsync_configured",
                "1 when flow sync is configured (multicast and flow_sync_key).",
                G,
                one(u64::from(fs.configured)),
            )?;
            family(
                e,
                "vc5_flowsync_holding_announcements",
                "1 while vc5d announces no VIP because vc5-flowsync has not resynced yet.",
                G,
                one(u64::from(fs.holding_announcements)),
            )?;
            family(
                e,
                "vc5_flowsync_hold_until_seconds",
                "When the announcement hold ends at the latest (0: no hold).",
                G,
                [(Labels::new(), seconds(fs.holding_until_ms))],
            )?;
            family(
                e,
                "vc5_flowsync_up",
                "1 while this host's vc5-flowsync runs (its heartbeat is fresh).",
                G,
                one(u64::from(fs.local.running)),
            )?;
            family(
                e,
                "vc5_flowsync_synced",
                "1 when this host's vc5-flowsync reports its resync done.",
                G,
                one(u64::from(fs.local.state == "synced")),
            )?;
            family(
                e,
                "vc5_flowsync_info",
                "This host's vc5-flowsync: state, sender id and epoch as labels; always 1.",
                G,
                [(
                    vec![
                        ("state", fs.local.state.clone()),
                        ("sender", fs.local.sender.clone()),
                        ("epoch", fs.local.epoch.to_string()),
                    ],
                    1u64,
                )],
            )?;
            let local: [(&str, &str, u64); 3] = [
                (
                    "vc5_flowsync_sent_datagrams",
                    "Flow-sync datagrams this host sent.",
                    fs.local.sent_datagrams,
                ),
                (
                    "vc5_flowsync_sent_records",
                    "Flow records this host sent.",
                    fs.local.sent_records,
                ),
                (
                    "vc5_flowsync_lost_events",
                    "Flow events the data plane's ring buffer had no room for.",
                    fs.local.lost_events,
                ),
            ];
            for (name, help, v) in local {
                family(e, name, help, C, one(v))?;
            }
            family(
                e,
                "vc5_flowsync_rejects",
                "Rejected flow-sync datagrams no peer could be told for, by reason.",
                C,
                fs.local
                    .rejects
                    .iter()
                    .map(|(r, n)| (vec![("reason", r.clone())], *n)),
            )?;
            let peer = |p: &FlowSyncPeer| vec![("peer", ip(p.addr))];
            let per_peer: [Getter<FlowSyncPeer>; 6] = [
                (
                    "vc5_flowsync_peer_datagrams",
                    "Flow-sync datagrams accepted from a peer.",
                    |p| p.datagrams,
                ),
                (
                    "vc5_flowsync_peer_records",
                    "Flow records received from a peer.",
                    |p| p.records,
                ),
                (
                    "vc5_flowsync_peer_written",
                    "A peer's flow records written into the peer flow tables.",
                    |p| p.written,
                ),
                (
                    "vc5_flowsync_peer_gaps",
                    "Sequence numbers a peer's datagrams skipped (lost on the way).",
                    |p| p.gaps,
                ),
                (
                    "vc5_flowsync_peer_unknown_real",
                    "A peer's records naming a service or real unknown here.",
                    |p| p.unknown_real,
                ),
                (
                    "vc5_flowsync_peer_rate_limited",
                    "A peer's records dropped for exceeding flow_sync_rate.",
                    |p| p.rate_limited,
                ),
            ];
            for (name, help, get) in per_peer {
                family(e, name, help, C, fs.peers.iter().map(|p| (peer(p), get(p))))?;
            }
            family(
                e,
                "vc5_flowsync_peer_rejects",
                "Datagrams from a peer rejected, by reason.",
                C,
                fs.peers.iter().flat_map(|p| {
                    p.rejects
                        .iter()
                        .map(move |(r, n)| (with(peer(p), "reason", r.clone()), *n))
                }),
            )?;
            family(
                e,
                "vc5_flowsync_peer_last_heard_seconds",
                "When a peer was last heard, in seconds since the Unix epoch.",
                G,
                fs.peers.iter().map(|p| (peer(p), seconds(p.last_heard_ms))),
            )?;
            family(
                e,
                "vc5_flowsync_peer_delay_seconds",
                "Propagation delay of a peer's datagrams (its send time to the write here) over the last 1024: quantile 0.5, 0.99 and 1 (the maximum).",
                G,
                fs.peers.iter().flat_map(|p| {
                    [
                        ("0.5", p.delay_p50_us),
                        ("0.99", p.delay_p99_us),
                        ("1", p.delay_max_us),
                    ]
                    .map(|(q, us)| (with(peer(p), "quantile", q.to_string()), us as f64 / 1e6))
                }),
            )?;

            // Data plane, per verdict/reason.
            family(
                e,
                "vc5_packets",
                "Packets seen by the XDP program, by verdict/reason.",
                C,
                st.global
                    .iter()
                    .map(|(k, c)| (vec![("reason", k.clone())], c.packets)),
            )?;
            family(
                e,
                "vc5_bytes",
                "Bytes seen by the XDP program, by verdict/reason.",
                C,
                st.global
                    .iter()
                    .map(|(k, c)| (vec![("reason", k.clone())], c.bytes)),
            )?;
            family(
                e,
                "vc5_probe_packets",
                "Health probes through the VIP seen by the XDP programs, by what became of them (sent, reply, no_way, not_probe).",
                C,
                st.probes
                    .iter()
                    .map(|(k, c)| (vec![("reason", k.clone())], c.packets)),
            )?;
            family(
                e,
                "vc5_flow_insert_limit",
                "New flows one CPU may insert into the flow table per second (0: no bound).",
                G,
                one(u64::from(st.flow_table.insert_limit)),
            )?;
            family(
                e,
                "vc5_flow_inserts_refused",
                "New flows forwarded without a flow-table entry because a CPU was over flow_insert_limit.",
                C,
                one(st.flow_table.inserts_refused),
            )?;
            family(
                e,
                "vc5_flow_evictions",
                "New flows that overwrote an idle flow because both their flow-table sets were full.",
                C,
                one(st.flow_table.evicted),
            )?;
            family(
                e,
                "vc5_flow_table_full",
                "New flows forwarded without a flow-table entry because both their sets were full of recently seen flows.",
                C,
                one(st.flow_table.refused_full),
            )?;
            Ok(())
        }
    }
}
