//! The sweep: a walk of the flow tables that clears the "moved" marks of
//! buckets whose flows all follow the table again, and deletes dead flows.

use super::*;

impl DataPlane {
    /// Buckets marked moved over all services; a sweep is worth running
    /// while this is not zero.
    pub fn moved_buckets(&self) -> usize {
        self.services
            .values()
            .filter_map(|s| s.table.as_deref())
            .map(Table::moved_count)
            .sum()
    }

    /// Starts a sweep of the flow tables (ours and the peers'): snapshots the tables that
    /// have moved buckets and opens the pinned flow maps for a walk on
    /// another thread ([`Sweep::run`]). None when nothing is marked.
    pub fn sweep_begin(&mut self) -> Result<Option<Sweep>, Error> {
        let snapshot: SweptTables = self
            .services
            .iter()
            .filter_map(|(id, st)| {
                let t = st.table.as_deref()?;
                (t.moved_count() > 0).then(|| {
                    let at = self.moved_at.get(id).cloned();
                    (*id, (st.index, Box::new(t.backend), at))
                })
            })
            .collect();
        if snapshot.is_empty() {
            return Ok(None);
        }
        self.moved_since.clear();
        // Services gone, or with no mark left, need no change times.
        let services = &self.services;
        self.moved_at.retain(|id, _| {
            services
                .get(id)
                .and_then(|s| s.table.as_deref())
                .is_some_and(|t| t.moved_count() > 0)
        });
        let open = |name: &'static str| -> Result<aya::maps::Map, Error> {
            let data =
                MapData::from_pin(self.dir.join("maps").join(name)).map_err(map_err(name))?;
            Ok(aya::maps::Map::LruHashMap(data))
        };
        // Flows last seen before this are dead; none is until the clock
        // has run in this process for a whole timeout, since flows stamped
        // under an older clock may have had packets it did not record.
        let now = self.settings.clock;
        let dead_before = now
            .checked_sub(self.idle_timeout)
            .filter(|t| self.clock_start != 0 && *t >= self.clock_start);
        let v4 = |name| -> Result<SweptTable, Error> {
            Ok(SweptTable::Peer4(
                BpfHashMap::try_from(open(name)?).map_err(map_err(name))?,
            ))
        };
        let v6 = |name| -> Result<SweptTable, Error> {
            Ok(SweptTable::Peer6(
                BpfHashMap::try_from(open(name)?).map_err(map_err(name))?,
            ))
        };
        let m = &self.maps;
        Ok(Some(Sweep {
            snapshot,
            dead_before,
            clock: now,
            tables: vec![
                (TCP, false, SweptTable::Local4(m.flows_tcp4.clone())),
                (TCP, false, SweptTable::Local6(m.flows_tcp6.clone())),
                (UDP, false, SweptTable::Local4(m.flows_udp4.clone())),
                (UDP, false, SweptTable::Local6(m.flows_udp6.clone())),
                (TCP, true, v4("peer_tcp4")?),
                (TCP, true, v6("peer_tcp6")?),
                (UDP, true, v4("peer_udp4")?),
                (UDP, true, v6("peer_udp6")?),
            ],
        }))
    }

    /// Applies a finished sweep: each swept service's moved marks become
    /// those its flows still need, plus buckets that moved meanwhile, plus
    /// any the program set meanwhile. Returns how many marks were cleared.
    pub fn sweep_end(&mut self, r: SweepResult) -> Result<usize, Error> {
        let mut cleared = 0;
        for (id, (index, needed)) in r.moved {
            let Some(st) = self.services.get_mut(&id) else {
                continue;
            };
            if st.index != index {
                continue; // the service was replaced during the sweep
            }
            let Some(ours) = st.table.as_deref() else {
                continue;
            };
            let live = self
                .maps
                .tables
                .get(&(index as u32), 0)
                .map_err(map_err("tables"))?;
            let since = self
                .moved_since
                .get(&id)
                .copied()
                .unwrap_or([0; MOVED_WORDS]);
            let mut t = *ours;
            for w in 0..MOVED_WORDS {
                let by_program = live.moved[w] & !ours.moved[w];
                t.moved[w] = needed[w] | since[w] | by_program;
            }
            if t.moved != ours.moved {
                cleared += ours.moved_count().saturating_sub(t.moved_count());
                self.maps
                    .tables
                    .set(index as u32, t, 0)
                    .map_err(map_err("tables"))?;
                st.table = Some(Box::new(t));
            }
        }
        Ok(cleared)
    }
}

/// Per swept service: its index, its table's reals, and when each bucket's
/// real last changed (None: not in this process).
pub(super) type SweptTables =
    HashMap<SvcId, (u16, Box<[u16; TABLE_SIZE]>, Option<Box<[u32; TABLE_SIZE]>>)>;

/// A walk of the flow tables, to find which moved buckets still have
/// live flows pinned to another real than the bucket's; dead ones (idle
/// past the timeout) are deleted instead. The peers' flow tables are
/// walked too: a live peer's flow pinned elsewhere keeps its bucket's mark
/// (peer_moved may not have it: vc5-flowsync set that bitmap against the
/// table before it changed), a dead one is ignored but left to
/// vc5-flowsync, which owns those maps. Runs without the [`DataPlane`], on
/// its own map handles, so the control loop goes on.
pub struct Sweep {
    snapshot: SweptTables,
    dead_before: Option<u32>,
    /// settings.clock when the sweep began: this host's flows' 16-bit
    /// stamps are widened against it.
    clock: u32,
    /// The flow tables, TCP and UDP (a UDP service's marks are as much
    /// needed by its flows, since ICMP errors skip the flow table where the
    /// bucket is clean, as a TCP one's), and whether it is a peers' table.
    tables: Vec<(u8, bool, SweptTable)>,
}

/// One flow table of a [`Sweep`]: this host's (mapped), or a peers' map.
pub(super) enum SweptTable {
    Local4(Arc<FlowTable<Flow4>>),
    Local6(Arc<FlowTable<Flow6>>),
    Peer4(BpfHashMap<MapData, Flow4, Flow>),
    Peer6(BpfHashMap<MapData, Flow6, Flow>),
}

/// What a [`Sweep`] found.
pub struct SweepResult {
    /// Per swept service (and its index then): the buckets still needed.
    moved: HashMap<SvcId, (u16, [u64; MOVED_WORDS])>,
    /// Local flows walked.
    pub flows: usize,
    /// Peers' flows walked.
    pub peer_flows: usize,
    /// Dead flows deleted because they alone kept a bucket marked.
    pub dead: usize,
}

impl Sweep {
    /// Walks the flows (blocking; reads them in batches of thousands per
    /// system call: about a hundred milliseconds for two million).
    pub fn run(self) -> SweepResult {
        let mut moved: HashMap<SvcId, (u16, [u64; MOVED_WORDS])> = self
            .snapshot
            .iter()
            .map(|(id, (index, _, _))| (*id, (*index, [0; MOVED_WORDS])))
            .collect();
        let (mut flows, mut peer_flows) = (0, 0);
        let dead_before = self.dead_before;
        // Is this flow pinned elsewhere than its bucket's real? Then it
        // keeps the bucket marked if alive, and goes if dead (a peer's:
        // is ignored).
        let mut visit = |proto: u8,
                         peer: bool,
                         saddr: [u8; 16],
                         daddr: [u8; 16],
                         sport: u16,
                         dport: u16,
                         f: &Flow|
         -> bool {
            if peer {
                peer_flows += 1;
            } else {
                flows += 1;
            }
            let id = (ip_from16(daddr), u16::from_be(dport), proto);
            let Some((_, table, moved_at)) = self.snapshot.get(&id) else {
                return false;
            };
            let k = crate::hash::flow_hash(&saddr, &daddr, sport, dport, proto) as usize
                & (TABLE_SIZE - 1);
            if table[k] as u32 == f.backend {
                return false;
            }
            // Dead: no packet stamped it for a timeout, and its bucket has
            // been moved (so every packet stamps) for a timeout too.
            let stamped_since = moved_at.as_ref().map_or(0, |m| m[k]);
            if dead_before.is_some_and(|t| f.seen < t && stamped_since < t) {
                return !peer;
            }
            let m = &mut moved.get_mut(&id).expect("same keys").1;
            m[k / 64] |= 1 << (k % 64);
            false
        };
        // Entries that vanish during the walk are skipped; entries added
        // during it are pinned to their bucket's real, or marked by the
        // program itself.
        let a = |x: u32| addr16(IpAddr::V4(std::net::Ipv4Addr::from(x.to_ne_bytes())));
        let mut read = Ok(());
        let mut dead = 0;
        for (proto, peer, table) in &self.tables {
            let (proto, peer) = (*proto, *peer);
            let clock = self.clock;
            let r = match table {
                SweptTable::Local4(t) => {
                    let mut n = 0;
                    dead += t.walk(
                        0,
                        t.sets(),
                        |k, v| {
                            let f = Flow {
                                backend: v.backend as u32,
                                seen: widen(v.seen, clock),
                            };
                            visit(proto, peer, a(k.saddr), a(k.daddr), k.sport, k.dport, &f)
                        },
                        &mut n,
                    );
                    Ok(())
                }
                SweptTable::Local6(t) => {
                    let mut n = 0;
                    dead += t.walk(
                        0,
                        t.sets(),
                        |k, v| {
                            let f = Flow {
                                backend: v.backend as u32,
                                seen: widen(v.seen, clock),
                            };
                            visit(proto, peer, k.saddr, k.daddr, k.sport, k.dport, &f)
                        },
                        &mut n,
                    );
                    Ok(())
                }
                SweptTable::Peer4(m) => {
                    crate::sys::lookup_all::<Flow4, Flow>(m.fd_raw(), |k, v| {
                        visit(proto, peer, a(k.saddr), a(k.daddr), k.sport, k.dport, v);
                    })
                }
                SweptTable::Peer6(m) => {
                    crate::sys::lookup_all::<Flow6, Flow>(m.fd_raw(), |k, v| {
                        visit(proto, peer, k.saddr, k.daddr, k.sport, k.dport, v);
                    })
                }
            };
            read = read.and(r);
        }
        // A map the walk could not read keeps all its marks: report every
        // swept bucket as still needed rather than clear one wrongly.
        if let Err(e) = read {
            warn!(error = %e, "flow-table sweep: reading the flows failed");
            for (_, m) in moved.values_mut() {
                *m = [u64::MAX; MOVED_WORDS];
            }
        }
        SweepResult {
            moved,
            flows,
            peer_flows,
            dead,
        }
    }
}

/// Raw fd of a flow map, for the batch commands of `crate::sys`.
pub(super) trait RawMapFd {
    fn fd_raw(&self) -> std::os::fd::RawFd;
}

impl<K: aya::Pod, V: aya::Pod> RawMapFd for BpfHashMap<MapData, K, V> {
    fn fd_raw(&self) -> std::os::fd::RawFd {
        use aya::maps::IterableMap;
        use std::os::fd::{AsFd, AsRawFd};
        self.map().fd().as_fd().as_raw_fd()
    }
}
