//! Counters and status read from the maps: per service and real, per
//! reason, the flow tables' pressure, flow sync's published status, and
//! the insert bound.

use super::*;

/// Counters of one real of one service, summed over CPUs.
#[derive(Debug, Clone, serde::Serialize)]
pub struct RealStats {
    pub addr: IpAddr,
    pub usable: bool,
    pub counters: BackendStats,
}

/// Counters of one service.
#[derive(Debug, Clone, serde::Serialize)]
pub struct ServiceStats {
    pub vip: IpAddr,
    pub port: u16,
    pub proto: u8,
    /// Sum over its reals, including reals since removed.
    pub counters: BackendStats,
    /// Packets dropped for want of a usable real.
    pub dropped: Counter,
    pub reals: Vec<RealStats>,
}

/// Everything the data plane counts, summed over CPUs.
#[derive(Debug, Clone, Default, serde::Serialize)]
pub struct Stats {
    pub global: BTreeMap<Reason, Counter>,
    pub services: Vec<ServiceStats>,
    /// New flows the insert limit kept out of the flow table.
    pub inserts_refused: u64,
    /// Inserts that overwrote an idle flow, both sets being full.
    pub flows_evicted: u64,
    /// Inserts refused because both sets were full of flows seen within
    /// [`EVICT_AGE`].
    pub flows_refused_full: u64,
    /// Probes through the VIP (`probe_stats`), by what became of them:
    /// `sent`, `reply` (handed back to the probe namespace), `no_way` (to
    /// a NAT address of no pair, or of one whose real has no way), and
    /// `not_probe` (from the namespace, but not a probe).
    pub probes: BTreeMap<&'static str, Counter>,
}

impl Stats {
    /// Per-VIP totals, summed from its services.
    pub fn vips(&self) -> BTreeMap<IpAddr, BackendStats> {
        let mut m: BTreeMap<IpAddr, BackendStats> = BTreeMap::new();
        for s in &self.services {
            *m.entry(s.vip).or_default() += s.counters;
        }
        m
    }
}

impl DataPlane {
    pub(super) fn backend_counters(&self, bidx: u16) -> Result<BackendStats, Error> {
        let v = self
            .maps
            .backend_stats
            .get(&(bidx as u32), 0)
            .map_err(map_err("backend_stats"))?;
        let mut sum = BackendStats::default();
        for c in v.iter() {
            sum += *c;
        }
        Ok(sum)
    }

    /// Reads and sums every counter.
    pub fn stats(&self) -> Result<Stats, Error> {
        let mut global = BTreeMap::new();
        for r in Reason::ALL {
            let v = self
                .maps
                .stats
                .get(&(r as u32), 0)
                .map_err(map_err("stats"))?;
            let mut sum = Counter::default();
            for c in v.iter() {
                sum += *c;
            }
            global.insert(r, sum);
        }
        let mut services = Vec::new();
        let mut ids: Vec<(&SvcId, &SvcState)> = self.services.iter().collect();
        ids.sort_by_key(|(id, _)| **id);
        for (id, st) in ids {
            let mut reals = Vec::new();
            let mut total = self.retired.get(id).copied().unwrap_or_default();
            let mut mine: Vec<(IpAddr, u16, u16)> = self
                .backends
                .iter()
                .filter(|((s, _), _)| *s == st.index)
                .map(|((_, addr), (bidx, v))| (*addr, *bidx, v.flags))
                .collect();
            mine.sort();
            for (addr, bidx, flags) in mine {
                let c = self.backend_counters(bidx)?;
                total += c;
                reals.push(RealStats {
                    addr,
                    usable: flags & BACKEND_USABLE != 0,
                    counters: c,
                });
            }
            let d = self
                .maps
                .service_drops
                .get(&(st.index as u32), 0)
                .map_err(map_err("service_drops"))?;
            let mut dropped = Counter::default();
            for c in d.iter() {
                dropped += *c;
            }
            services.push(ServiceStats {
                vip: id.0,
                port: id.1,
                proto: id.2,
                counters: total,
                dropped,
                reals,
            });
        }
        let (flows_evicted, flows_refused_full) = self.flow_table_pressure()?;
        let probes = ["sent", "reply", "no_way", "not_probe"]
            .into_iter()
            .zip(self.probe_stats()?)
            .collect();
        Ok(Stats {
            global,
            services,
            inserts_refused: self.inserts_refused()?,
            flows_evicted,
            flows_refused_full,
            probes,
        })
    }

    /// What vc5-flowsync last published: entry 0 is this host's
    /// vc5-flowsync (all zero when it never ran against these maps), then
    /// the peers it heard, in the order first heard.
    pub fn sync_status(&self) -> Result<(SyncStatus, Vec<SyncStatus>), Error> {
        let own = self
            .maps
            .sync_status
            .get(&0, 0)
            .map_err(map_err("sync_status"))?;
        let mut peers = Vec::new();
        for i in 1..=SYNC_PEERS {
            let p = self
                .maps
                .sync_status
                .get(&i, 0)
                .map_err(map_err("sync_status"))?;
            if p.state != 0 {
                peers.push(p);
            }
        }
        Ok((own, peers))
    }

    /// Flow events the program could not write because the ring was full,
    /// summed over CPUs (vc5-flowsync publishes the same in
    /// `sync_status[0].lost`).
    pub fn flow_events_lost(&self) -> Result<u64, Error> {
        let v = self
            .maps
            .flow_events_lost
            .get(&0, 0)
            .map_err(map_err("flow_events_lost"))?;
        Ok(v.iter().sum())
    }

    /// Sets how many flows one CPU may insert per second (0: no
    /// bound). Over it, a packet that would insert its flow is forwarded
    /// by the table without one ([`DataPlane::inserts_refused`]).
    pub fn set_insert_limit(&mut self, limit: u32) -> Result<(), Error> {
        let mut s = self.settings;
        s.insert_limit = limit;
        self.write_settings(s)
    }

    /// The bound in force ([`DataPlane::set_insert_limit`]).
    pub fn insert_limit(&self) -> u32 {
        self.settings.insert_limit
    }

    /// Inserts the bound refused, summed over the CPUs.
    pub fn inserts_refused(&self) -> Result<u64, Error> {
        let v = self
            .maps
            .cpu_state
            .get(&0, 0)
            .map_err(map_err("cpu_state"))?;
        Ok(v.iter().map(|c| c.refused).sum())
    }

    /// Inserts into two full sets, summed over CPUs: those that overwrote
    /// an idle flow, and those refused because every flow there was seen
    /// within [`EVICT_AGE`]. Either is a sign the flow tables are too small
    /// for the site (or of a flood of new flows).
    pub fn flow_table_pressure(&self) -> Result<(u64, u64), Error> {
        let v = self
            .maps
            .cpu_state
            .get(&0, 0)
            .map_err(map_err("cpu_state"))?;
        Ok((
            v.iter().map(|c| c.evicted as u64).sum(),
            v.iter().map(|c| c.full as u64).sum(),
        ))
    }

    /// Each CPU's guess that its next insert needs the flow's second set
    /// (`cpu_state.deep`, set by its last insert), which makes the program
    /// load that set early.
    pub fn insert_hints(&self) -> Result<Vec<bool>, Error> {
        let v = self
            .maps
            .cpu_state
            .get(&0, 0)
            .map_err(map_err("cpu_state"))?;
        Ok(v.iter().map(|c| c.deep != 0).collect())
    }

    /// Sets every CPU's `cpu_state.deep`: for tests that show the early
    /// load changes no placement. A packet running meanwhile may lose its
    /// CPU's counts.
    pub fn set_insert_hints(&mut self, deep: bool) -> Result<(), Error> {
        let mut v: Vec<CpuState> = self
            .maps
            .cpu_state
            .get(&0, 0)
            .map_err(map_err("cpu_state"))?
            .to_vec();
        for c in v.iter_mut() {
            c.deep = deep as u32;
        }
        let v = PerCpuValues::try_from(v)?;
        self.maps
            .cpu_state
            .set(0, v, 0)
            .map_err(map_err("cpu_state"))
    }
}
