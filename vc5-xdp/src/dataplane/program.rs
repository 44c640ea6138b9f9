//! Programming the maps from the desired services: slots, backends and
//! lookup tables, written so that a packet never sees a half-made state.

use super::*;

pub(super) type SvcId = (IpAddr, u16, u8);

/// A table to build: the service, its previous table and candidates if
/// known, and its candidates now.
pub(super) type TableJob<'a> = (
    SvcId,
    Option<&'a Table>,
    Option<&'a [Candidate]>,
    &'a [Candidate],
);

pub(super) fn svc_name(id: &SvcId) -> String {
    let proto = if id.2 == TCP { "tcp" } else { "udp" };
    match id.0 {
        IpAddr::V4(a) => format!("{a}:{}/{proto}", id.1),
        IpAddr::V6(a) => format!("[{a}]:{}/{proto}", id.1),
    }
}

/// Allocates small integer ids, cycling through the whole range before an
/// id is reused, so that flows still pointing at a freed backend id find
/// it unusable (and move) rather than finding a new real behind it.
#[derive(Debug, Clone)]
pub(super) struct Ids {
    pub(super) used: HashSet<u32>,
    pub(super) next: u32,
    pub(super) max: u32,
}

impl Ids {
    pub(super) fn new(max: u32) -> Self {
        Ids {
            used: HashSet::new(),
            next: 1,
            max,
        }
    }
    pub(super) fn take(&mut self, id: u32) {
        self.used.insert(id);
        if id >= self.next {
            self.next = id + 1;
        }
    }
    pub(super) fn alloc(&mut self) -> Option<u32> {
        if self.used.len() + 1 >= self.max as usize {
            return None;
        }
        loop {
            if self.next >= self.max {
                self.next = 1;
            }
            let id = self.next;
            self.next += 1;
            if self.used.insert(id) {
                return Some(id);
            }
        }
    }
    pub(super) fn free(&mut self, id: u32) {
        self.used.remove(&id);
    }
}

#[derive(Debug, Clone)]
pub(super) struct SvcState {
    pub(super) index: u16,
    pub(super) vip: u16,
    /// The table as last written, and the candidates it was built from
    /// (None after a restart: the next build is a full one).
    pub(super) table: Option<Box<Table>>,
    pub(super) cands: Option<Vec<Candidate>>,
}

/// Fills `v` with the way to `real` by `forward` over `l2` (MACs,
/// interface, VLAN, tunnel) and marks it usable; false, leaving the way
/// fields unset, when there is none: no MAC yet, no outer source of the
/// real's family for a tunnel, or a VID no tag can carry (warned about
/// when `warn`). The backends of reals in service and the probes through
/// the VIP ([`super::probes`]) take their ways from here alike.
pub(super) fn fill_way(
    v: &mut Backend,
    forward: Forward,
    real: IpAddr,
    l2: Option<&L2>,
    vip: IpAddr,
    port: u16,
    warn: bool,
) -> bool {
    let Some(l2) = l2 else { return false };
    let (tunnel, tport) = forward.wire();
    // A tunnel needs an outer source of the real's family.
    let outer = match l2.src {
        _ if tunnel == TUNNEL_NONE => true,
        Some(src) => src.is_ipv6() == real.is_ipv6(),
        None => false,
    };
    if l2.mac == [0; 6] || !outer {
        return false;
    }
    if let Some(vid) = l2.vlan.filter(|vid| *vid > VLAN_MAX) {
        if warn {
            warn!(
                "real {real} of {vip}:{port}: VLAN {vid} is not 0..={VLAN_MAX}; the real is unusable"
            );
        }
        return false;
    }
    v.mac = l2.mac;
    v.src_mac = l2.src_mac;
    v.ifindex = l2.ifindex;
    v.flags = BACKEND_USABLE;
    if let Some(vid) = l2.vlan {
        v.flags |= BACKEND_VLAN;
        v.vlan = vid;
    }
    if tunnel != TUNNEL_NONE {
        v.tunnel = tunnel;
        v.tunnel_port = tport;
        v.src_addr = l2.src.map(addr16).unwrap_or_default();
        v.mtu = l2.mtu;
        if real.is_ipv6() {
            v.flags |= BACKEND_OUTER6;
        }
    }
    true
}

/// A backend index as a flow table holds it (16 bits; 0 is no real).
pub(super) fn backend16(b: u32) -> Result<u16, Error> {
    u16::try_from(b)
        .ok()
        .filter(|b| *b != 0)
        .ok_or_else(|| Error::Pin(format!("backend index {b} does not fit a flow table")))
}

impl DataPlane {
    /// Applies the desired state: services, their reals, each real's mode
    /// and layer-2 next hop. Only differences are written. When any
    /// service slot, table or backend changed (even if a later write
    /// failed), `settings.generation` is bumped last, so vc5-flowsync
    /// re-reads what it caches of them once they are in place. The first
    /// programming of new maps sets it even when it wrote nothing (no
    /// services): 0 means "never programmed", which vc5-flowsync waits out
    /// before it asks its peers for their flows, or it could place none.
    pub fn program(&mut self, specs: &[ServiceSpec]) -> Result<(), Error> {
        let mut changed = false;
        let r = self.apply(specs, &mut changed);
        if changed || self.settings.generation == 0 {
            let mut s = self.settings;
            s.generation = s.generation.wrapping_add(1).max(1);
            self.write_settings(s)?;
        }
        r
    }

    /// The programming of [`DataPlane::program`]; sets `changed` with
    /// the first write to a map.
    pub(super) fn apply(&mut self, specs: &[ServiceSpec], changed: &mut bool) -> Result<(), Error> {
        // Validate before touching any map.
        let mut want: HashMap<SvcId, &ServiceSpec> = HashMap::new();
        for s in specs {
            let id = (s.vip, s.port, s.proto);
            if want.insert(id, s).is_some() {
                return Err(Error::Duplicate(svc_name(&id)));
            }
        }
        let max_services = self.sizes.services.min(u16::MAX as u32 + 1) as usize - 1;
        if want.len() > max_services {
            return Err(Error::Full {
                what: "services",
                have: want.len(),
                max: max_services,
            });
        }
        let nb: usize = specs.iter().map(|s| s.reals.len()).sum();
        let max_backends = self.sizes.backends.min(u16::MAX as u32 + 1) as usize - 1;
        if nb > max_backends {
            return Err(Error::Full {
                what: "reals over all services",
                have: nb,
                max: max_backends,
            });
        }

        // Allocate ids for new services and VIPs.
        let mut slots_changed = false;
        let mut want_vips: HashSet<IpAddr> = HashSet::new();
        for (id, _) in want.iter() {
            want_vips.insert(id.0);
        }
        for vip in &want_vips {
            if !self.vips.contains_key(vip) {
                let v = self.vip_ids.alloc().ok_or(Error::Full {
                    what: "VIPs",
                    have: want_vips.len(),
                    max: u16::MAX as usize,
                })?;
                self.vips.insert(*vip, v as u16);
                slots_changed = true;
            }
        }
        let mut ids: Vec<SvcId> = want.keys().copied().collect();
        ids.sort();
        for id in &ids {
            if !self.services.contains_key(id) {
                let index = self.service_ids.alloc().ok_or(Error::Full {
                    what: "services",
                    have: want.len(),
                    max: max_services,
                })?;
                let vip = self.vips[&id.0];
                self.services.insert(
                    *id,
                    SvcState {
                        index: index as u16,
                        vip,
                        table: None,
                        cands: None,
                    },
                );
                slots_changed = true;
            }
        }

        // Backends: compute each one's value; write the usable ones first.
        let mut live: HashSet<(u16, IpAddr)> = HashSet::new();
        let mut later: Vec<(u16, Backend)> = Vec::new();
        let mut candidates: HashMap<SvcId, Vec<Candidate>> = HashMap::new();
        for id in &ids {
            let spec = want[id];
            let sidx = self.services[id].index;
            let mut cands = Vec::new();
            for r in &spec.reals {
                let key = (sidx, r.addr);
                if !live.insert(key) {
                    continue; // the same real listed twice
                }
                let bidx = match self.backends.get(&key) {
                    Some((b, _)) => *b,
                    None => {
                        let b = self.backend_ids.alloc().ok_or(Error::Full {
                            what: "reals over all services",
                            have: nb,
                            max: max_backends,
                        })? as u16;
                        // The index's epoch goes on from its former user,
                        // whose flows CPUs may still have cached.
                        let epoch = self
                            .maps
                            .backends
                            .get(&(b as u32), 0)
                            .map_err(map_err("backends"))?
                            .epoch;
                        let placeholder = Backend {
                            epoch,
                            ..Backend::default()
                        };
                        self.backends.insert(key, (b, placeholder));
                        b
                    }
                };
                let old = self.backends[&key].1;
                let mut v = Backend {
                    service: sidx,
                    addr: addr16(r.addr),
                    epoch: old.epoch,
                    ..Backend::default()
                };
                // The way's fields only while the real may have packets.
                let mut way = v;
                let usable = r.mode != RealMode::Down
                    && fill_way(
                        &mut way,
                        spec.forward,
                        r.addr,
                        r.l2.as_ref(),
                        spec.vip,
                        spec.port,
                        true,
                    );
                if usable {
                    v = way;
                }
                if usable && r.mode == RealMode::Serve && r.weight > 0 {
                    cands.push(Candidate {
                        addr: r.addr,
                        weight: r.weight,
                        backend: bidx,
                    });
                }
                if old != v {
                    // Any change (a failure, a recovery, a new MAC) makes
                    // the CPUs' cached copies of its flows stale: another
                    // CPU may re-pin a flow while the real is unusable.
                    // (A drain changes nothing here: drained reals keep
                    // their flows, and the caches with them.)
                    v.epoch = old.epoch.wrapping_add(1);
                    if usable {
                        *changed = true;
                        self.maps
                            .backends
                            .set(bidx as u32, v, 0)
                            .map_err(map_err("backends"))?;
                    } else {
                        later.push((bidx, v));
                    }
                    self.backends.insert(key, (bidx, v));
                }
            }
            candidates.insert(*id, cands);
        }

        // Tables: built in parallel (a full build of a 64-real service is
        // a quarter-million hashes), incrementally where the previous
        // table and its candidates are known; then written in order.
        let jobs: Vec<TableJob> = ids
            .iter()
            .map(|id| {
                let st = &self.services[id];
                let cands = &candidates[id][..];
                (*id, st.table.as_deref(), st.cands.as_deref(), cands)
            })
            .filter(|(_, _, old, new)| *old != Some(*new))
            .collect();
        let threads = std::thread::available_parallelism()
            .map_or(1, |n| n.get())
            .min(8);
        let chunk = jobs.len().div_ceil(threads).max(1);
        let built: Vec<(SvcId, Box<Table>)> = std::thread::scope(|sc| {
            let handles: Vec<_> = jobs
                .chunks(chunk)
                .map(|part| {
                    sc.spawn(move || {
                        part.iter()
                            .map(|(id, old, old_cands, new)| {
                                let seed = table::service_seed(id.0, id.1, id.2);
                                let t = match (old, old_cands) {
                                    (Some(t), Some(c)) => table::rebuild(seed, t, c, new),
                                    _ => table::build(seed, new),
                                };
                                (*id, t)
                            })
                            .collect::<Vec<_>>()
                    })
                })
                .collect();
            handles
                .into_iter()
                .flat_map(|h| h.join().expect("table build panicked"))
                .collect()
        });
        let now = self.settings.clock;
        for (id, mut t) in built {
            let st = self.services.get_mut(&id).expect("allocated above");
            if let Some(old) = st.table.as_deref() {
                // A bucket whose real changes may have flows pinned to the
                // old one: mark it before the change is visible.
                t.moved = old.moved;
                let since = self.moved_since.entry(id).or_insert([0; MOVED_WORDS]);
                for k in 0..TABLE_SIZE {
                    if old.backend[k] != t.backend[k] {
                        t.set_moved(k);
                        since[k / 64] |= 1 << (k % 64);
                        self.moved_at
                            .entry(id)
                            .or_insert_with(|| Box::new([0; TABLE_SIZE]))[k] = now;
                    }
                }
                if old.backend != t.backend && old.moved != t.moved {
                    let mut marked = *old;
                    marked.moved = t.moved;
                    *changed = true;
                    self.maps
                        .tables
                        .set(st.index as u32, marked, 0)
                        .map_err(map_err("tables"))?;
                }
            }
            if st.table.as_deref() != Some(&t) {
                *changed = true;
                self.maps
                    .tables
                    .set(st.index as u32, *t, 0)
                    .map_err(map_err("tables"))?;
                st.table = Some(t);
            }
            st.cands = Some(candidates[&id].clone());
        }

        // Services and VIPs that go.
        let gone: Vec<SvcId> = self
            .services
            .keys()
            .filter(|id| !want.contains_key(id))
            .copied()
            .collect();
        if !gone.is_empty() {
            slots_changed = true;
        }
        let gone_vips: Vec<IpAddr> = self
            .vips
            .keys()
            .filter(|v| !want_vips.contains(v))
            .copied()
            .collect();
        if !gone_vips.is_empty() {
            slots_changed = true;
        }

        // Slots: write the idle half, then flip.
        if slots_changed || self.half_used[(self.settings.active & 1) as usize].is_none() {
            let mut entries: Vec<SvcSlot> = Vec::new();
            for id in &ids {
                let st = &self.services[id];
                entries.push(SvcSlot {
                    key: SvcKey::new(id.0, id.1, id.2),
                    service: st.index,
                    vip: st.vip,
                });
            }
            for vip in &want_vips {
                entries.push(SvcSlot {
                    key: SvcKey::marker(*vip),
                    service: 0,
                    vip: self.vips[vip],
                });
            }
            *changed = true;
            self.write_slots(&entries)?;
        }

        // Now nothing routes to what goes: retire it.
        for id in gone {
            if let Some(st) = self.services.remove(&id) {
                self.service_ids.free(st.index as u32);
            }
        }
        for v in gone_vips {
            if let Some(i) = self.vips.remove(&v) {
                self.vip_ids.free(i as u32);
            }
        }
        for (bidx, v) in later {
            *changed = true;
            self.maps
                .backends
                .set(bidx as u32, v, 0)
                .map_err(map_err("backends"))?;
        }
        let stale: Vec<(u16, IpAddr)> = self
            .backends
            .keys()
            .filter(|k| !live.contains(k))
            .copied()
            .collect();
        let by_index: HashMap<u16, SvcId> =
            self.services.iter().map(|(id, s)| (s.index, *id)).collect();
        for key in stale {
            let (bidx, old) = self.backends.remove(&key).expect("listed above");
            let counters = self.backend_counters(bidx)?;
            if let Some(id) = by_index.get(&key.0) {
                *self.retired.entry(*id).or_default() += counters;
            }
            let freed = Backend {
                epoch: old.epoch.wrapping_add(1),
                ..Backend::default()
            };
            *changed = true;
            self.maps
                .backends
                .set(bidx as u32, freed, 0)
                .map_err(map_err("backends"))?;
            let zero = PerCpuValues::try_from(vec![BackendStats::default(); self.nr_cpus])?;
            self.maps
                .backend_stats
                .set(bidx as u32, zero, 0)
                .map_err(map_err("backend_stats"))?;
            self.backend_ids.free(bidx as u32);
        }
        self.retired.retain(|id, _| want.contains_key(id));
        Ok(())
    }

    /// Places `entries` in the idle half with a seed that keeps every key
    /// within PROBES slots, then makes that half live.
    pub(super) fn write_slots(&mut self, entries: &[SvcSlot]) -> Result<(), Error> {
        let idle = (self.settings.active & 1) ^ 1;
        let base = idle << SLOT_BITS;
        let mut placed: Option<(u32, HashMap<u32, SvcSlot>)> = None;
        let mut seed = self.settings.seed[idle as usize].wrapping_add(0x9e37_79b9) | 1;
        'seeds: for _ in 0..64 {
            let mut m: HashMap<u32, SvcSlot> = HashMap::new();
            for e in entries {
                let h = crate::hash::slot_hash(&e.key, seed);
                let mut ok = false;
                for p in 0..PROBES {
                    let i = (h.wrapping_add(p)) & (SLOTS - 1);
                    if let std::collections::hash_map::Entry::Vacant(v) = m.entry(i) {
                        v.insert(*e);
                        ok = true;
                        break;
                    }
                }
                if !ok {
                    seed = crate::hash::mix(seed.wrapping_add(1)) | 1;
                    continue 'seeds;
                }
            }
            placed = Some((seed, m));
            break;
        }
        let (seed, m) = placed.ok_or(Error::Slots(entries.len()))?;

        // Clear what the idle half held, then write the new entries.
        let old = match self.half_used[idle as usize].take() {
            Some(u) => u,
            None => (0..SLOTS).map(|i| base | i).collect(),
        };
        for idx in old {
            if !m.contains_key(&(idx & (SLOTS - 1))) {
                self.maps
                    .slots
                    .set(idx, SvcSlot::default(), 0)
                    .map_err(map_err("svc_slots"))?;
            }
        }
        let mut used = HashSet::new();
        for (i, e) in &m {
            self.maps
                .slots
                .set(base | i, e, 0)
                .map_err(map_err("svc_slots"))?;
            used.insert(base | i);
        }
        self.half_used[idle as usize] = Some(used);

        // Seed first (the live half's seed is untouched), then the flip:
        // each write changes one field a packet reads, so none sees a mix.
        let mut s = self.settings;
        s.seed[idle as usize] = seed;
        self.write_settings(s)?;
        s.active = idle;
        self.write_settings(s)
    }

    /// `settings.generation`: bumped by every [`DataPlane::program`] that
    /// changed a service slot, a table or a backend.
    pub fn generation(&self) -> u32 {
        self.settings.generation
    }

    /// The index of a service (its `tables`, `peer_moved` and
    /// `service_drops` entry), if it is programmed.
    pub fn service_index(&self, vip: IpAddr, port: u16, proto: u8) -> Option<u16> {
        self.services.get(&(vip, port, proto)).map(|s| s.index)
    }

    /// The backend index of a real of a service, if it has one.
    pub fn backend_index(&self, vip: IpAddr, port: u16, proto: u8, real: IpAddr) -> Option<u16> {
        let st = self.services.get(&(vip, port, proto))?;
        self.backends.get(&(st.index, real)).map(|(b, _)| *b)
    }

    /// The table currently written for a service.
    pub fn table(&self, vip: IpAddr, port: u16, proto: u8) -> Option<&Table> {
        self.services.get(&(vip, port, proto))?.table.as_deref()
    }

    /// A service's table as the map holds it now, with the marks the
    /// program set itself since (for tests).
    pub fn live_table(&self, vip: IpAddr, port: u16, proto: u8) -> Option<Table> {
        let index = self.services.get(&(vip, port, proto))?.index;
        self.maps.tables.get(&(index as u32), 0).ok()
    }
}
