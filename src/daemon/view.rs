//! The status snapshot the front ends show, built from the derivation.

use super::control::{Control, Plane};
use super::{proto_number, unix_ms};
use crate::status::{
    CheckStatus, Counter, FlowCounters, RealStatus, RhiStatus, ServiceStatus, SessionStatus,
    Status, VipStatus,
};
use std::collections::{BTreeSet, HashMap};
use std::net::IpAddr;
use std::time::SystemTime;
use vc5_health::CheckState;
use vc5_xdp::netlink;

impl<P: Plane> Control<P> {
    pub(super) fn status_snapshot(&self) -> Status {
        // The counters by endpoint and real, looked up once per row below.
        let by_endpoint: HashMap<(IpAddr, u16, u8), &vc5_xdp::dataplane::ServiceStats> = self
            .stats
            .iter()
            .flat_map(|st| &st.services)
            .map(|x| ((x.vip, x.port, x.proto), x))
            .collect();
        // Before the first programming (a stop during start-up), what the
        // inputs say so far.
        let early;
        let derived = match &self.derived {
            Some(d) => d,
            None => {
                early = self.derivation();
                &early
            }
        };
        let mut services = Vec::new();
        for (s, sv) in self.cfg.services.iter().zip(&derived.services) {
            let (up, healthy) = (sv.up, sv.healthy);
            for (vip, port, proto) in s.endpoints() {
                let ds = by_endpoint.get(&(vip, port, proto_number(proto))).copied();
                let real_counters: HashMap<IpAddr, &vc5_xdp::maps::BackendStats> = ds
                    .iter()
                    .flat_map(|d| &d.reals)
                    .map(|x| (x.addr, &x.counters))
                    .collect();
                let reals = s
                    .reals
                    .iter()
                    .zip(&sv.reals)
                    .map(|(r, rv)| {
                        let counters = real_counters
                            .get(&r.addr)
                            .map(|c| FlowCounters {
                                packets: c.packets,
                                bytes: c.bytes,
                                new_flows: c.new_flows,
                            })
                            .unwrap_or_default();
                        let checks = s
                            .checks
                            .iter()
                            .flat_map(|c| {
                                super::checks::instances(s, c)
                                    .into_iter()
                                    .map(move |(name, via)| (c, name, via))
                            })
                            .map(|(c, name, via)| {
                                let v = self.checks.get(&(s.name.clone(), r.addr, name.clone()));
                                // The latest run, not the one of the last
                                // transition: a steady check runs on unseen.
                                let latest = v.and_then(|v| v.latest.get());
                                let last = latest.as_ref();
                                CheckStatus {
                                    name,
                                    probe: c.probe,
                                    via,
                                    passing: v.is_some_and(|v| v.state == CheckState::Passing),
                                    reason: last
                                        .and_then(|o| o.failure())
                                        .map(|f| f.to_string())
                                        .unwrap_or_default(),
                                    latency_ms: last.map_or(0.0, |o| o.latency.as_secs_f64() * 1e3),
                                    at_ms: last.map_or(0, |o| unix_ms(o.wall)),
                                }
                            })
                            .collect();
                        RealStatus {
                            addr: Some(r.addr),
                            state: rv.shown(),
                            healthy: rv.healthy,
                            drained: rv.drained,
                            disabled: r.disabled,
                            weight: r.weight as u32,
                            forward: s.forward.name().into(),
                            next_hop: rv.l2.map(|_| rv.via.unwrap_or(r.addr)),
                            mac: rv.l2.map(|l| netlink::format_mac(&l.mac)),
                            vlan: rv.l2.and_then(|l| l.vlan),
                            reason: rv.reason.clone(),
                            checks,
                            counters,
                        }
                    })
                    .collect();
                services.push(ServiceStatus {
                    name: s.name.clone(),
                    desc: s.desc.clone(),
                    vip: Some(vip),
                    port,
                    protocol: proto.as_str().to_string(),
                    forward: s.forward.name().into(),
                    tunnel_port: s.forward.port(),
                    state: if up { "up" } else { "down" }.into(),
                    need: s.need,
                    healthy,
                    total: s.reals.len(),
                    counters: ds
                        .map(|d| FlowCounters {
                            packets: d.counters.packets,
                            bytes: d.counters.bytes,
                            new_flows: d.counters.new_flows,
                        })
                        .unwrap_or_default(),
                    dropped: ds
                        .map(|d| Counter {
                            packets: d.dropped.packets,
                            bytes: d.dropped.bytes,
                        })
                        .unwrap_or_default(),
                    reals,
                });
            }
        }
        let vips: BTreeSet<IpAddr> = self
            .cfg
            .services
            .iter()
            .flat_map(|s| s.addrs.iter().copied())
            .collect();
        let global = self
            .stats
            .as_ref()
            .map(|st| {
                st.global
                    .iter()
                    .map(|(r, c)| {
                        let name = serde_json::to_value(r)
                            .ok()
                            .and_then(|v| v.as_str().map(str::to_string))
                            .unwrap_or_default();
                        (
                            name,
                            Counter {
                                packets: c.packets,
                                bytes: c.bytes,
                            },
                        )
                    })
                    .collect()
            })
            .unwrap_or_default();
        let at_ms = unix_ms(SystemTime::now());
        Status {
            version: env!("CARGO_PKG_VERSION").to_string(),
            at_ms,
            started_ms: self.started_ms,
            ready_ms: self.ready_ms,
            reloads: self.reloads.clone(),
            config: self.args.config.display().to_string(),
            interfaces: self.interfaces.clone(),
            services,
            vips: vips
                .into_iter()
                .map(|v| VipStatus {
                    vip: Some(v),
                    announceable: derived.announceable.contains(&v),
                    announced: self.announced.contains(&v),
                })
                .collect(),
            rhi: rhi_status(&self.rhi_status),
            global,
            probes: self
                .stats
                .iter()
                .flat_map(|st| &st.probes)
                .map(|(k, c)| {
                    (
                        k.to_string(),
                        Counter {
                            packets: c.packets,
                            bytes: c.bytes,
                        },
                    )
                })
                .collect(),
            events: self.log.snapshot(),
            local_trouble: self.hold.as_ref().map(|h| crate::status::LocalTrouble {
                reason: h.reason.clone(),
                since_ms: unix_ms(h.since),
            }),
            flow_sync: self.flow_sync_status(at_ms),
            flow_table: crate::status::FlowTableStatus {
                insert_limit: self.dp.insert_limit(),
                inserts_refused: self.stats.as_ref().map_or(0, |s| s.inserts_refused),
                evicted: self.stats.as_ref().map_or(0, |s| s.flows_evicted),
                refused_full: self.stats.as_ref().map_or(0, |s| s.flows_refused_full),
            },
        }
    }
}

/// Route health injection's report, as the status shows it.
pub(super) fn rhi_status(st: &vc5_bird_bridge::Status) -> RhiStatus {
    let mut sessions = Vec::new();
    if st.mode == vc5_bird_bridge::Mode::Bird || st.peers.is_empty() {
        let b = &st.bird;
        sessions.push(SessionStatus {
            peer: format!("bird {}", b.socket.display()),
            state: if b.connected { "up" } else { "down" }.into(),
            last_error: b.last_error.clone().unwrap_or_default(),
            up: b.connected,
        });
        // BIRD's own BGP sessions, as it lists them.
        for p in b.protocols.iter().filter(|p| p.proto == "BGP") {
            sessions.push(SessionStatus {
                peer: format!("bird {}", p.name),
                state: format!("{} {}", p.state, p.info).trim().to_string(),
                last_error: String::new(),
                up: p.state == "up",
            });
        }
    }
    for p in &st.peers {
        let up = p.established_since.is_some();
        sessions.push(SessionStatus {
            peer: p.address.to_string(),
            state: format!("{:?}", p.state).to_lowercase(),
            last_error: p.last_error.clone().unwrap_or_default(),
            up,
        });
    }
    RhiStatus {
        mode: st.mode.to_string(),
        sessions,
    }
}
