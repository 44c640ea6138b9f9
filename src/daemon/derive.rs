//! The daemon's rules, as one pure function. In: the configuration, the
//! checks' states, the reals' MACs, the operator's drains and the reals on
//! probation. Out: each real's state, data-plane mode, whether it counts
//! toward its service's `need` and why not; each service's state; the VIPs
//! that may be announced. The control loop computes one [`Derivation`] per
//! change, programs the data plane from it ([`Derivation::specs`]), builds
//! the status from it, and reports what changed as [`changes`] between the
//! previous derivation and the new one.

use super::checks::CheckView;
use super::proto_number;
use crate::config::{self, Config};
use std::collections::{BTreeMap, BTreeSet, HashMap};
use std::net::IpAddr;
use vc5_health::{Admin, CheckState, Quorum, RealState, announceable_vips, real_state, verdict};
use vc5_xdp::{Forward, L2, RealMode, RealSpec, ServiceSpec};

/// What the rules read. The maps are the control loop's own.
pub(super) struct Inputs<'a> {
    pub cfg: &'a Config,
    pub checks: &'a HashMap<super::checks::CheckId, CheckView>,
    /// How this host reaches each real; None (or absent) while unresolved.
    pub hops: &'a HashMap<IpAddr, Option<NextHop>>,
    /// Reals drained at run time: (service name, real).
    pub drained: &'a BTreeSet<(String, IpAddr)>,
    /// Reals that left service within the open window of reals failing
    /// together (see `trouble.rs`): they keep their flows until it closes.
    pub probation: &'a BTreeSet<(String, IpAddr)>,
}

/// How this host reaches a real, as the resolver last reported it.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(super) struct NextHop {
    /// The next hop's MAC, the egress interface and its MAC, and the source
    /// address and MTU towards the real (which only tunnels use).
    pub l2: L2,
    /// The route's gateway when the real is not on-link.
    pub via: Option<IpAddr>,
}

/// What `forward` can make of `hop` for `real`: the data plane's next hop,
/// or why there is none. With `vlans` configured the frame is tagged with
/// the VLAN whose prefix holds the next hop (the real, or its gateway) and
/// leaves through the trunk it came in on (ifindex 0), sourced from the MAC
/// of that VLAN's interface, which the route to the real names.
pub(super) fn reach(
    cfg: &Config,
    forward: Forward,
    real: IpAddr,
    hop: Option<&NextHop>,
) -> Result<L2, String> {
    let Some(hop) = hop else {
        return Err("MAC not resolved".into());
    };
    let mut l2 = match (forward, hop.via) {
        // Layer-2 DSR delivers the client's frame to the real's own MAC: a
        // gateway's would hand it to the wrong host.
        (Forward::L2, Some(gw)) => {
            return Err(format!(
                "not on-link (the route goes via {gw}); forward: l2 needs the real on this host's LAN"
            ));
        }
        (Forward::L2, None) => L2 {
            src: None,
            mtu: 0,
            ..hop.l2
        },
        (_, _) if hop.l2.src.is_none() => {
            return Err("no source address towards the real (the route names none)".into());
        }
        _ => hop.l2,
    };
    if !cfg.vlans.is_empty() {
        let next = hop.via.unwrap_or(real);
        let Some(vid) = cfg.vlan_of(next) else {
            return Err(format!("next hop {next} is in no VLAN of `vlans`"));
        };
        l2.vlan = Some(vid);
        l2.ifindex = 0;
    }
    Ok(l2)
}

/// One real of one service, as the rules see it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(super) struct RealView {
    pub addr: IpAddr,
    pub state: RealState,
    /// The data plane's next hop for the real, when this service's
    /// `forward` can reach it.
    pub l2: Option<L2>,
    /// The gateway its packets go through, when it is not on-link.
    pub via: Option<IpAddr>,
    pub drained: bool,
    /// Counts toward `need`: its checks (and the operator) let it serve
    /// and its MAC is known (a real we cannot reach serves nobody).
    pub healthy: bool,
    /// What the data plane does with it.
    pub mode: RealMode,
    /// Why it does not count toward `need`, in words: the MAC, or being
    /// disabled, then the failing checks' reasons. Empty when drained.
    pub reason: String,
}

impl RealView {
    /// The state the status shows: a real whose checks pass but whose MAC
    /// is unknown is "unresolved".
    pub fn shown(&self) -> String {
        if self.l2.is_none() && self.state.is_healthy() {
            "unresolved".into()
        } else {
            self.state.to_string()
        }
    }
}

/// One service (all its endpoints), in the configuration's order.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(super) struct ServiceView {
    pub name: String,
    /// At least `need` of its reals count as healthy.
    pub up: bool,
    /// How many of its reals count as healthy.
    pub healthy: usize,
    /// Its reals, in the configuration's order.
    pub reals: Vec<RealView>,
}

/// Everything that follows from one state of the inputs.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub(super) struct Derivation {
    /// In the configuration's order.
    pub services: Vec<ServiceView>,
    /// VIPs every service of which is up.
    pub announceable: BTreeSet<IpAddr>,
}

/// A real's state within a service, from its checks' views (one per
/// configured check, None for one that has not reported), by the service's
/// quorum, and the operator's settings.
fn state<'a>(
    svc: &config::Service,
    real: &config::Real,
    views: impl IntoIterator<Item = Option<&'a CheckView>>,
    drained: bool,
) -> RealState {
    let states = views
        .into_iter()
        .map(|c| c.map_or(CheckState::Unknown, |c| c.state));
    real_state(
        Admin {
            disabled: real.disabled,
            drained,
        },
        verdict(Quorum::from_config(svc.quorum), states),
    )
}

/// The (service, real) pairs that `checks` and the operator's settings
/// let serve, MACs aside: what the window of reals failing together
/// compares.
pub(super) fn check_healthy(
    cfg: &Config,
    checks: &HashMap<super::checks::CheckId, CheckView>,
    drained: &BTreeSet<(String, IpAddr)>,
) -> BTreeSet<(String, IpAddr)> {
    let mut out = BTreeSet::new();
    for s in &cfg.services {
        for r in &s.reals {
            let key = (s.name.clone(), r.addr);
            let views = s
                .checks
                .iter()
                .map(|c| super::checks::view(checks, s, r.addr, c));
            if state(s, r, views, drained.contains(&key)).is_healthy() {
                out.insert(key);
            }
        }
    }
    out
}

impl Derivation {
    pub fn new(i: &Inputs) -> Derivation {
        let mut services = Vec::with_capacity(i.cfg.services.len());
        let mut ups = Vec::new();
        for s in &i.cfg.services {
            let reals: Vec<RealView> = s.reals.iter().map(|r| real(i, s, r)).collect();
            let healthy = reals.iter().filter(|r| r.healthy).count();
            let up = healthy >= s.need;
            ups.extend(s.addrs.iter().map(|v| (*v, up)));
            services.push(ServiceView {
                name: s.name.clone(),
                up,
                healthy,
                reals,
            });
        }
        Derivation {
            services,
            announceable: announceable_vips(ups),
        }
    }

    /// The desired data plane: one spec per endpoint of every service.
    /// `cfg` must be the configuration this was derived from.
    pub fn specs(&self, cfg: &Config) -> Vec<ServiceSpec> {
        let mut out = Vec::new();
        for (s, v) in cfg.services.iter().zip(&self.services) {
            let reals: Vec<RealSpec> = s
                .reals
                .iter()
                .zip(&v.reals)
                .map(|(r, rv)| RealSpec {
                    addr: r.addr,
                    weight: r.weight as u32,
                    mode: rv.mode,
                    l2: rv.l2,
                })
                .collect();
            for (vip, port, proto) in s.endpoints() {
                out.push(ServiceSpec {
                    vip,
                    port,
                    proto: proto_number(proto),
                    forward: s.forward,
                    reals: reals.clone(),
                });
            }
        }
        out
    }

    /// Each (service, real) with whether it counts as healthy.
    fn health(&self) -> BTreeMap<(&str, IpAddr), &RealView> {
        self.services
            .iter()
            .flat_map(|s| s.reals.iter().map(move |r| ((s.name.as_str(), r.addr), r)))
            .collect()
    }
}

fn real(i: &Inputs, s: &config::Service, r: &config::Real) -> RealView {
    let key = (s.name.clone(), r.addr);
    let drained = i.drained.contains(&key);
    let views: Vec<Option<&CheckView>> = s
        .checks
        .iter()
        .map(|c| super::checks::view(i.checks, s, r.addr, c))
        .collect();
    let state = state(s, r, views.iter().copied(), drained);
    let hop = i.hops.get(&r.addr).copied().flatten();
    let l2 = reach(i.cfg, s.forward, r.addr, hop.as_ref());
    let mode = if state.takes_new_flows() {
        RealMode::Serve
    } else if state.keeps_flows() || i.probation.contains(&key) {
        RealMode::Drain
    } else {
        RealMode::Down
    };
    let reason = if let Err(why) = &l2 {
        why.clone()
    } else if drained {
        String::new()
    } else {
        let mut failing: Vec<String> = views
            .iter()
            .flatten()
            .filter(|v| v.state == CheckState::Failing)
            .map(|v| {
                v.last
                    .as_ref()
                    .and_then(|o| o.failure())
                    .map_or_else(|| "failing".to_string(), |f| f.to_string())
            })
            .collect();
        failing.sort();
        if r.disabled {
            failing.insert(0, "disabled in the configuration".into());
        }
        failing.join("; ")
    };
    RealView {
        addr: r.addr,
        state,
        healthy: state.is_healthy() && l2.is_ok(),
        l2: l2.ok(),
        via: hop.and_then(|h| h.via),
        drained,
        mode,
        reason,
    }
}

/// What changed between two derivations, for the log and the event stream.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(super) enum Change {
    /// A real started or stopped counting as healthy for its service;
    /// `before` is None for a real the previous derivation did not have.
    Real {
        service: String,
        real: IpAddr,
        before: Option<bool>,
        healthy: bool,
        reason: String,
    },
    /// A VIP became announceable (every service on it up) or stopped.
    Vip { vip: IpAddr, announceable: bool },
}

/// The changes from `old` (None before the first derivation) to `new`:
/// reals in the new configuration's order, then VIPs in address order.
pub(super) fn changes(old: Option<&Derivation>, new: &Derivation) -> Vec<Change> {
    let before = old.map(Derivation::health).unwrap_or_default();
    let mut out = Vec::new();
    for s in &new.services {
        for r in &s.reals {
            let was = before.get(&(s.name.as_str(), r.addr)).map(|v| v.healthy);
            if was != Some(r.healthy) {
                out.push(Change::Real {
                    service: s.name.clone(),
                    real: r.addr,
                    before: was,
                    healthy: r.healthy,
                    reason: r.reason.clone(),
                });
            }
        }
    }
    let empty = BTreeSet::new();
    let was = old.map_or(&empty, |o| &o.announceable);
    for v in new.announceable.difference(was) {
        out.push(Change::Vip {
            vip: *v,
            announceable: true,
        });
    }
    for v in was.difference(&new.announceable) {
        out.push(Change::Vip {
            vip: *v,
            announceable: false,
        });
    }
    out
}

#[cfg(test)]
mod tests {
    //! The rules without a data plane, a monitor or root: configurations
    //! parsed from text, check views and MACs made up.

    use super::*;
    use crate::config::parse;
    use std::sync::Arc;
    use std::time::{Duration, SystemTime};
    use vc5_health::{Failure, Outcome};

    /// Two services: web (two checks, quorum 1 unless `quorum` says
    /// otherwise, need 2 of three reals, the third `disabled` if asked)
    /// and dns, which shares web's first VIP and needs one real.
    fn cfg(quorum: &str, disabled: bool) -> Config {
        let yaml = format!(
            "services:
  - name: web
    addr: [192.0.2.1, 192.0.2.2]
    port: 80
    real: web
    need: 2
    {quorum}
    checks:
      - {{type: tcp, port: 80}}
      - {{type: http, port: 80, path: /health}}
  - name: dns
    addr: 192.0.2.1
    port: 53
    protocol: udp
    real: [dns]
    checks:
      - {{type: dns, port: 53}}
reals:
  web: [10.0.0.1, 10.0.0.2, {{addr: 10.0.0.3, disabled: {disabled}}}]
  dns: [10.0.1.1]
"
        );
        parse(&yaml, "test.yaml").unwrap_or_else(|e| panic!("{e}"))
    }

    fn ip(s: &str) -> IpAddr {
        s.parse().unwrap()
    }

    fn view(state: CheckState, failure: Option<Failure>) -> CheckView {
        let outcome = Outcome {
            result: failure.map_or(Ok(()), Err),
            latency: Duration::from_millis(1),
            at: tokio::time::Instant::now(),
            wall: SystemTime::now(),
        };
        CheckView {
            state,
            last: Some(outcome),
            latest: Arc::default(),
        }
    }

    /// An on-link next hop with a source address and MTU, as the resolver
    /// reports one.
    fn hop() -> NextHop {
        NextHop {
            l2: L2 {
                mac: [2, 0, 0, 0, 0, 1],
                src_mac: [2, 0, 0, 0, 0, 2],
                ifindex: 2,
                src: Some(ip("10.0.0.100")),
                mtu: 1500,
                vlan: None,
            },
            via: None,
        }
    }

    /// The inputs the tests change, owned.
    struct World {
        cfg: Config,
        checks: HashMap<super::super::checks::CheckId, CheckView>,
        hops: HashMap<IpAddr, Option<NextHop>>,
        drained: BTreeSet<(String, IpAddr)>,
        probation: BTreeSet<(String, IpAddr)>,
    }

    impl World {
        /// Every check passing, every MAC known.
        fn new(cfg: Config) -> World {
            let mut w = World {
                cfg,
                checks: HashMap::new(),
                hops: HashMap::new(),
                drained: BTreeSet::new(),
                probation: BTreeSet::new(),
            };
            for s in w.cfg.services.clone() {
                for r in &s.reals {
                    w.hops.insert(r.addr, Some(hop()));
                    for c in &s.checks {
                        w.set(&s.name, r.addr, c, CheckState::Passing, None);
                    }
                }
            }
            w
        }

        fn set(
            &mut self,
            svc: &str,
            real: IpAddr,
            c: &config::Check,
            state: CheckState,
            why: Option<Failure>,
        ) {
            self.checks
                .insert((svc.into(), real, c.name.clone()), view(state, why));
        }

        /// Sets check `i` of service `svc` for `real`.
        fn check(&mut self, svc: &str, real: &str, i: usize, state: CheckState) {
            let c = self.svc(svc).checks[i].clone();
            let why = (state == CheckState::Failing).then_some(Failure::Refused);
            self.set(svc, ip(real), &c, state, why);
        }

        fn svc(&self, name: &str) -> &config::Service {
            self.cfg.services.iter().find(|s| s.name == name).unwrap()
        }

        fn derive(&self) -> Derivation {
            Derivation::new(&Inputs {
                cfg: &self.cfg,
                checks: &self.checks,
                hops: &self.hops,
                drained: &self.drained,
                probation: &self.probation,
            })
        }
    }

    fn real<'a>(d: &'a Derivation, svc: &str, addr: &str) -> &'a RealView {
        let s = d.services.iter().find(|s| s.name == svc).unwrap();
        s.reals.iter().find(|r| r.addr == ip(addr)).unwrap()
    }

    fn up(d: &Derivation, svc: &str) -> bool {
        d.services.iter().find(|s| s.name == svc).unwrap().up
    }

    /// Every combination of quorum (all checks / at least one), the two
    /// checks' states, the MAC, drained and disabled, for one real:
    /// its state, mode, whether it counts, and its reason.
    #[test]
    fn a_real_follows_quorum_mac_drain_and_disabled() {
        use CheckState::*;
        let states = [Passing, Failing, Unknown];
        for quorum in ["", "quorum: 1"] {
            for disabled in [false, true] {
                for a in states {
                    for b in states {
                        for mac in [true, false] {
                            for drained in [false, true] {
                                let mut w = World::new(cfg(quorum, disabled));
                                w.check("web", "10.0.0.3", 0, a);
                                w.check("web", "10.0.0.3", 1, b);
                                if !mac {
                                    w.hops.insert(ip("10.0.0.3"), None);
                                }
                                if drained {
                                    w.drained.insert(("web".into(), ip("10.0.0.3")));
                                }
                                let d = w.derive();
                                let r = real(&d, "web", "10.0.0.3");
                                let case = format!(
                                    "quorum {quorum:?} disabled {disabled} checks {a:?}/{b:?} mac {mac} drained {drained}"
                                );
                                // What the checks say together.
                                let pass = if quorum.is_empty() {
                                    a == Passing && b == Passing
                                } else {
                                    a == Passing || b == Passing
                                };
                                let fail = if quorum.is_empty() {
                                    a == Failing || b == Failing
                                } else {
                                    a == Failing && b == Failing
                                };
                                let want = if disabled {
                                    RealState::Disabled
                                } else if fail {
                                    RealState::Failed
                                } else if !pass {
                                    RealState::Pending
                                } else if drained {
                                    RealState::Drained
                                } else {
                                    RealState::Serving
                                };
                                assert_eq!(r.state, want, "{case}");
                                assert_eq!(r.drained, drained, "{case}");
                                assert_eq!(r.healthy, want.is_healthy() && mac, "{case}");
                                let mode = match want {
                                    RealState::Serving => RealMode::Serve,
                                    RealState::Drained | RealState::Pending => RealMode::Drain,
                                    _ => RealMode::Down,
                                };
                                assert_eq!(r.mode, mode, "{case}");
                                // A MAC not known is the reason first; a
                                // drained real has none; otherwise being
                                // disabled, then each failing check.
                                let failing = [a, b].iter().filter(|s| **s == Failing).count();
                                let mut why: Vec<&str> = Vec::new();
                                if disabled {
                                    why.push("disabled in the configuration");
                                }
                                why.extend(std::iter::repeat_n("connection refused", failing));
                                let reason = if !mac {
                                    "MAC not resolved".to_string()
                                } else if drained {
                                    String::new()
                                } else {
                                    why.join("; ")
                                };
                                assert_eq!(r.reason, reason, "{case}");
                                let shown = if !mac && want.is_healthy() {
                                    "unresolved".to_string()
                                } else {
                                    want.to_string()
                                };
                                assert_eq!(r.shown(), shown, "{case}");
                            }
                        }
                    }
                }
            }
        }
    }

    /// A service is up while at least `need` reals count as healthy; a
    /// disabled real counts toward the total but never toward `need`.
    #[test]
    fn a_service_is_up_with_need_healthy_reals() {
        let mut w = World::new(cfg("", false));
        let d = w.derive();
        assert!(up(&d, "web"));
        assert_eq!(d.services[0].healthy, 3);
        w.check("web", "10.0.0.1", 0, CheckState::Failing);
        let d = w.derive();
        assert_eq!(d.services[0].healthy, 2);
        assert!(up(&d, "web"), "2 of need 2");
        w.hops.insert(ip("10.0.0.2"), None);
        let d = w.derive();
        assert_eq!(d.services[0].healthy, 1);
        assert!(!up(&d, "web"), "a real without a MAC serves nobody");
        let mut w = World::new(cfg("", true));
        w.drained.insert(("web".into(), ip("10.0.0.1")));
        let d = w.derive();
        assert_eq!(
            d.services[0].healthy, 2,
            "drained counts, disabled does not"
        );
        assert!(up(&d, "web"));
        w.check("web", "10.0.0.2", 1, CheckState::Unknown);
        assert!(
            !up(&w.derive(), "web"),
            "a real not yet checked does not count"
        );
    }

    /// A VIP may be announced only while every service on it is up.
    #[test]
    fn a_vip_is_announceable_while_every_service_on_it_is_up() {
        let mut w = World::new(cfg("", false));
        let all: BTreeSet<IpAddr> = [ip("192.0.2.1"), ip("192.0.2.2")].into();
        assert_eq!(w.derive().announceable, all);
        // dns is only on 192.0.2.1.
        w.check("dns", "10.0.1.1", 0, CheckState::Failing);
        let d = w.derive();
        assert!(up(&d, "web") && !up(&d, "dns"));
        assert_eq!(d.announceable, [ip("192.0.2.2")].into());
        // web is on both.
        w.check("dns", "10.0.1.1", 0, CheckState::Passing);
        w.check("web", "10.0.0.1", 0, CheckState::Failing);
        w.check("web", "10.0.0.2", 0, CheckState::Failing);
        assert_eq!(w.derive().announceable, BTreeSet::new());
    }

    /// A real on probation (it left service within the window of reals
    /// failing together) keeps its flows; after the window it loses them.
    #[test]
    fn a_real_on_probation_keeps_its_flows() {
        let mut w = World::new(cfg("", false));
        w.check("web", "10.0.0.1", 0, CheckState::Failing);
        assert_eq!(real(&w.derive(), "web", "10.0.0.1").mode, RealMode::Down);
        w.probation.insert(("web".into(), ip("10.0.0.1")));
        let d = w.derive();
        assert_eq!(real(&d, "web", "10.0.0.1").mode, RealMode::Drain);
        assert!(
            !real(&d, "web", "10.0.0.1").healthy,
            "but it does not count"
        );
    }

    /// The data plane gets one spec per endpoint, with each real's mode
    /// and MAC as derived, in the configuration's order.
    #[test]
    fn specs_follow_the_derivation() {
        let mut w = World::new(cfg("", true));
        w.drained.insert(("web".into(), ip("10.0.0.2")));
        let d = w.derive();
        let specs = d.specs(&w.cfg);
        let endpoints: Vec<(IpAddr, u16, u8)> =
            specs.iter().map(|s| (s.vip, s.port, s.proto)).collect();
        assert_eq!(
            endpoints,
            [
                (ip("192.0.2.1"), 80, vc5_xdp::dataplane::TCP),
                (ip("192.0.2.2"), 80, vc5_xdp::dataplane::TCP),
                (ip("192.0.2.1"), 53, vc5_xdp::dataplane::UDP),
            ]
        );
        let modes: Vec<RealMode> = specs[0].reals.iter().map(|r| r.mode).collect();
        assert_eq!(modes, [RealMode::Serve, RealMode::Drain, RealMode::Down]);
        assert_eq!(specs[0].reals, specs[1].reals);
        assert!(specs[0].reals.iter().all(|r| r.l2.is_some()));
    }

    /// What a service's `forward` can do with a real's next hop: layer 2
    /// needs the real on-link (its own MAC, no source address or MTU in
    /// the spec); a tunnel goes through a gateway too, with this host's
    /// source address and the MTU, but not without a source address.
    #[test]
    fn forward_decides_which_next_hops_serve() {
        let mut w = World::new(cfg("", false));
        let via = NextHop {
            via: Some(ip("10.9.0.1")),
            ..hop()
        };
        w.hops.insert(ip("10.0.0.1"), Some(via));
        let d = w.derive();
        let r = real(&d, "web", "10.0.0.1");
        assert!(!r.healthy && r.l2.is_none());
        assert_eq!(r.via, Some(ip("10.9.0.1")));
        assert!(
            r.reason
                .starts_with("not on-link (the route goes via 10.9.0.1)"),
            "{}",
            r.reason
        );
        let spec = &d.specs(&w.cfg)[0];
        assert_eq!(spec.forward, Forward::L2);
        assert_eq!(spec.reals[1].l2.map(|l| (l.src, l.mtu)), Some((None, 0)));

        w.cfg.services[0].forward = Forward::Gue { port: 6080 };
        let d = w.derive();
        let r = real(&d, "web", "10.0.0.1");
        assert!(r.healthy, "{}", r.reason);
        assert_eq!(r.l2, Some(via.l2));
        let spec = &d.specs(&w.cfg)[0];
        assert_eq!(spec.forward, Forward::Gue { port: 6080 });
        assert_eq!(
            spec.reals[0].l2.map(|l| (l.src, l.mtu)),
            Some((Some(ip("10.0.0.100")), 1500))
        );

        let mut no_src = via;
        no_src.l2.src = None;
        w.hops.insert(ip("10.0.0.1"), Some(no_src));
        let r = real(&w.derive(), "web", "10.0.0.1").clone();
        assert!(!r.healthy);
        assert_eq!(
            r.reason,
            "no source address towards the real (the route names none)"
        );
    }

    /// With `vlans`, a real's frames are tagged with the VLAN whose prefix
    /// holds its next hop (the real itself, or a tunnel's gateway) and leave
    /// through the trunk they came in on; a next hop in no VLAN is
    /// unusable. Without `vlans` nothing is tagged.
    #[test]
    fn vlans_tag_by_the_next_hop() {
        let mut w = World::new(cfg("", false));
        assert_eq!(real(&w.derive(), "web", "10.0.0.1").l2.unwrap().vlan, None);
        w.cfg.vlans = [
            (10, vec!["10.0.0.0/31".parse().unwrap()]),
            (
                20,
                vec![
                    "10.0.0.2/31".parse().unwrap(),
                    "10.9.0.0/24".parse().unwrap(),
                ],
            ),
        ]
        .into();
        let d = w.derive();
        let l2 = real(&d, "web", "10.0.0.1").l2.unwrap();
        assert_eq!(
            (l2.vlan, l2.ifindex, l2.src_mac),
            (Some(10), 0, hop().l2.src_mac)
        );
        assert_eq!(real(&d, "web", "10.0.0.3").l2.unwrap().vlan, Some(20));
        // dns's real 10.0.1.1 is in no VLAN.
        let r = real(&d, "dns", "10.0.1.1");
        assert!(!r.healthy);
        assert_eq!(r.reason, "next hop 10.0.1.1 is in no VLAN of `vlans`");
        // A tunnel to a real elsewhere: its gateway's VLAN.
        w.cfg.services[1].forward = Forward::Ipip;
        w.hops.insert(
            ip("10.0.1.1"),
            Some(NextHop {
                via: Some(ip("10.9.0.1")),
                ..hop()
            }),
        );
        let r = real(&w.derive(), "dns", "10.0.1.1").clone();
        assert!(r.healthy, "{}", r.reason);
        assert_eq!(r.l2.unwrap().vlan, Some(20));
    }

    /// Events are the difference between two derivations: the first
    /// reports every real (before: None) and every announceable VIP; an
    /// unchanged input reports nothing; one failing check reports exactly
    /// the real and the VIPs it changes, with the reason.
    #[test]
    fn changes_are_the_difference_between_derivations() {
        let mut w = World::new(cfg("", false));
        let first = w.derive();
        let c = changes(None, &first);
        assert_eq!(c.len(), 4 + 2, "{c:?}");
        assert!(c.iter().all(|c| matches!(
            c,
            Change::Real {
                before: None,
                healthy: true,
                ..
            } | Change::Vip {
                announceable: true,
                ..
            }
        )));
        assert_eq!(changes(Some(&first), &w.derive()), []);
        w.check("dns", "10.0.1.1", 0, CheckState::Failing);
        let second = w.derive();
        assert_eq!(
            changes(Some(&first), &second),
            [
                Change::Real {
                    service: "dns".into(),
                    real: ip("10.0.1.1"),
                    before: Some(true),
                    healthy: false,
                    reason: "connection refused".into(),
                },
                Change::Vip {
                    vip: ip("192.0.2.1"),
                    announceable: false,
                },
            ]
        );
        // A drain changes the mode, not the health: no event.
        w.drained.insert(("web".into(), ip("10.0.0.1")));
        let third = w.derive();
        assert_ne!(third, second);
        assert_eq!(changes(Some(&second), &third), []);
    }

    /// Over a reload, reals and checks that stay keep their state: the
    /// check views are keyed by service, real and check name, not position,
    /// so the new configuration, its checks reordered, derives the same
    /// reals from the same views, with no event; a new real comes in with
    /// `before: None`.
    #[test]
    fn a_reload_keeps_what_stays() {
        let mut w = World::new(cfg("", false));
        w.check("web", "10.0.0.1", 0, CheckState::Failing);
        let old = w.derive();
        // The same services, checks reordered, one more real.
        let yaml = "services:
  - name: web
    addr: [192.0.2.1, 192.0.2.2]
    port: 80
    real: web
    need: 2
    checks:
      - {type: http, port: 80, path: /health}
      - {type: tcp, port: 80}
  - name: dns
    addr: 192.0.2.1
    port: 53
    protocol: udp
    real: [dns]
    checks:
      - {type: dns, port: 53}
reals:
  web: [10.0.0.1, 10.0.0.2, 10.0.0.3, 10.0.0.4]
  dns: [10.0.1.1]
";
        w.cfg = parse(yaml, "test.yaml").unwrap();
        let new = w.derive();
        assert_eq!(real(&new, "web", "10.0.0.1"), real(&old, "web", "10.0.0.1"));
        let c = changes(Some(&old), &new);
        assert_eq!(c.len(), 1, "{c:?}");
        assert!(matches!(
            &c[0],
            Change::Real { real, before: None, healthy: false, .. } if *real == ip("10.0.0.4")
        ));
    }
}
