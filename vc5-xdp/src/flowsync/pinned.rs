//! The data plane's pinned maps as `vc5-flowsync` uses them: opened by
//! path under `<bpffs>/maps/` (vc5d creates them), checked against this
//! build's layouts, and read and written with raw `bpf(2)` calls, batched
//! where it matters (BPF_MAP_LOOKUP_BATCH for dumps, sweeps and the
//! resolver; BPF_MAP_UPDATE_BATCH for peer flows). aya supplies the ring
//! buffer reader and the per-CPU read of `flow_events_lost`.
//!
//! vc5d may be restarted, or replace its maps (a new, incompatible
//! layout): [`Pinned::replaced`] compares the `settings` map's id behind
//! the pin with the one opened.

use std::os::fd::{AsFd, AsRawFd, RawFd};
use std::path::{Path, PathBuf};

use aya::maps::{Map, MapData, MapInfo, MapType, PerCpuArray, RingBuf};

use super::engine::{Cursor, FlowKey, FlowMap, Resolver};
use crate::dataplane::{TCP, UDP};
use crate::flowtable::FlowTable;
use crate::maps::{
    Backend, Flow, Flow4, Flow6, PeerMoved, SLOT_BITS, SLOTS, Set4, Set6, Settings, SvcSlot,
    SyncStatus, Table,
};
use crate::sys::{delete_batch, lookup, lookup_chunk, read_array, update, update_batch};

#[derive(Debug, thiserror::Error)]
pub enum PinnedError {
    #[error("{0} does not exist (yet): is vc5d running with this --bpffs?")]
    Missing(PathBuf),
    #[error("pinned map {path} is not what this vc5-flowsync expects: {what}")]
    Incompatible { path: PathBuf, what: String },
    #[error("pinned map {path}: {source}")]
    Map {
        path: PathBuf,
        #[source]
        source: aya::maps::MapError,
    },
    #[error("pinned maps: {0}")]
    Io(#[from] std::io::Error),
}

/// The maps vc5-flowsync uses.
pub struct Pinned {
    dir: PathBuf,
    settings: MapData,
    svc_slots: MapData,
    tables: MapData,
    backends: MapData,
    /// This host's flow tables, mapped (tcp4, udp4 as IPv4; tcp6, udp6).
    flows4: [FlowTable<Flow4>; 2],
    flows6: [FlowTable<Flow6>; 2],
    peers: [MapData; 4],
    peer_moved: MapData,
    sync_status: MapData,
    lost: PerCpuArray<MapData, u64>,
    ring: RingBuf<MapData>,
    settings_id: u32,
    backends_len: u32,
    moved_len: u32,
}

impl std::fmt::Debug for Pinned {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Pinned")
            .field("dir", &self.dir)
            .field("settings_id", &self.settings_id)
            .finish()
    }
}

fn fd(m: &MapData) -> RawFd {
    m.fd().as_fd().as_raw_fd()
}

/// Opens one pinned map and checks its type and sizes.
fn open_map(
    dir: &Path,
    name: &str,
    ty: MapType,
    key: usize,
    value: usize,
) -> Result<(MapData, MapInfo), PinnedError> {
    let path = dir.join(name);
    if !path.exists() {
        return Err(PinnedError::Missing(path));
    }
    let map_err = |source| PinnedError::Map {
        path: path.clone(),
        source,
    };
    let data = MapData::from_pin(&path).map_err(map_err)?;
    let info = data.info().map_err(map_err)?;
    let have = info.map_type().map_err(map_err)?;
    let mut what = Vec::new();
    if have != ty {
        what.push(format!("type {have:?}, expected {ty:?}"));
    }
    if ty != MapType::RingBuf {
        if info.key_size() as usize != key {
            what.push(format!("key size {}, expected {key}", info.key_size()));
        }
        if info.value_size() as usize != value {
            what.push(format!(
                "value size {}, expected {value}",
                info.value_size()
            ));
        }
    }
    if !what.is_empty() {
        return Err(PinnedError::Incompatible {
            path,
            what: what.join(", "),
        });
    }
    Ok((data, info))
}

impl Pinned {
    /// Opens the maps pinned under `bpffs/maps`. [`PinnedError::Missing`]
    /// while vc5d has not created them.
    pub fn open(bpffs: &Path) -> Result<Self, PinnedError> {
        use std::mem::size_of;
        let dir = bpffs.join("maps");
        let array = |name, v| open_map(&dir, name, MapType::Array, 4, v).map(|(m, _)| m);
        let lru = |name: String, k| {
            open_map(&dir, &name, MapType::LruHash, k, size_of::<Flow>()).map(|(m, _)| m)
        };
        let (settings, info) =
            open_map(&dir, "settings", MapType::Array, 4, size_of::<Settings>())?;
        let settings_id = info.id();
        let svc_slots = array("svc_slots", size_of::<SvcSlot>())?;
        let tables = array("tables", size_of::<Table>())?;
        let (backends, binfo) =
            open_map(&dir, "backends", MapType::Array, 4, size_of::<Backend>())?;
        let key = |m: FlowMap| {
            if m.v6() {
                size_of::<Flow6>()
            } else {
                size_of::<Flow4>()
            }
        };
        let mut peers = Vec::new();
        for m in FlowMap::ALL {
            peers.push(lru(format!("peer_{}", m.suffix()), key(m))?);
        }
        let local4 = |name: &str, proto| -> Result<FlowTable<Flow4>, PinnedError> {
            let (m, info) = open_map(&dir, name, MapType::Array, 4, size_of::<Set4>())?;
            Ok(FlowTable::map(m.fd().as_fd(), info.max_entries(), proto)?)
        };
        let local6 = |name: &str, proto| -> Result<FlowTable<Flow6>, PinnedError> {
            let (m, info) = open_map(&dir, name, MapType::Array, 4, size_of::<Set6>())?;
            Ok(FlowTable::map(m.fd().as_fd(), info.max_entries(), proto)?)
        };
        let flows4 = [local4("flows_tcp4", TCP)?, local4("flows_udp4", UDP)?];
        let flows6 = [local6("flows_tcp6", TCP)?, local6("flows_udp6", UDP)?];
        let (peer_moved, minfo) = open_map(
            &dir,
            "peer_moved",
            MapType::Array,
            4,
            size_of::<PeerMoved>(),
        )?;
        let sync_status = array("sync_status", size_of::<SyncStatus>())?;
        let (lost, _) = open_map(&dir, "flow_events_lost", MapType::PerCpuArray, 4, 8)?;
        let (ring, _) = open_map(&dir, "flow_events", MapType::RingBuf, 0, 0)?;
        let map_err = |name: &str| {
            let path = dir.join(name);
            move |source| PinnedError::Map { path, source }
        };
        let lost =
            PerCpuArray::try_from(Map::from_map_data(lost).map_err(map_err("flow_events_lost"))?)
                .map_err(map_err("flow_events_lost"))?;
        let ring = RingBuf::try_from(Map::from_map_data(ring).map_err(map_err("flow_events"))?)
            .map_err(map_err("flow_events"))?;
        Ok(Pinned {
            dir: bpffs.to_path_buf(),
            settings,
            svc_slots,
            tables,
            backends,
            flows4,
            flows6,
            peers: peers.try_into().expect("four maps"),
            peer_moved,
            sync_status,
            lost,
            ring,
            settings_id,
            backends_len: binfo.max_entries(),
            moved_len: minfo.max_entries(),
        })
    }

    /// Whether the maps behind the pins are no longer those opened (vc5d
    /// replaced them) or are gone.
    pub fn replaced(&self) -> bool {
        match MapInfo::from_pin(self.dir.join("maps").join("settings")) {
            Ok(info) => info.id() != self.settings_id,
            Err(_) => true,
        }
    }

    pub fn ring(&mut self) -> &mut RingBuf<MapData> {
        &mut self.ring
    }

    pub fn ring_fd(&self) -> RawFd {
        self.ring.as_raw_fd()
    }

    pub fn settings(&self) -> std::io::Result<Settings> {
        lookup(fd(&self.settings), &0u32)
    }

    /// Flow events the ring had no room for, summed over CPUs.
    pub fn events_lost(&self) -> u64 {
        self.lost
            .get(&0, 0)
            .map(|v| v.iter().copied().fold(0u64, u64::wrapping_add))
            .unwrap_or(0)
    }

    /// Reads the live services, their reals and tables under one
    /// `settings.generation` (retried when vc5d programmed meanwhile).
    pub fn resolver(&self) -> std::io::Result<Resolver> {
        let mut tries = 0;
        loop {
            let before = self.settings()?;
            let half = before.active & 1;
            let slots: Vec<SvcSlot> = read_array(fd(&self.svc_slots), half << SLOT_BITS, SLOTS)?;
            let services = Resolver::service_indexes(&slots);
            let backends: Vec<Backend> = read_array(fd(&self.backends), 0, self.backends_len)?;
            let mut tables = Vec::with_capacity(services.len());
            for s in services {
                tables.push((s, lookup::<u32, Table>(fd(&self.tables), &(s as u32))?));
            }
            let after = self.settings()?;
            tries += 1;
            if after.generation == before.generation && after.active == before.active || tries >= 5
            {
                return Ok(Resolver::new(
                    before.generation,
                    slots,
                    backends
                        .into_iter()
                        .enumerate()
                        .filter(|(_, b)| b.service != 0)
                        .map(|(i, b)| (i as u32, b)),
                    tables,
                ));
            }
        }
    }

    /// The non-empty `peer_moved` entries.
    pub fn peer_moved(&self) -> std::io::Result<Vec<(u16, PeerMoved)>> {
        let all: Vec<PeerMoved> = read_array(fd(&self.peer_moved), 0, self.moved_len)?;
        Ok(all
            .into_iter()
            .enumerate()
            .filter(|(i, m)| *i <= u16::MAX as usize && m.count() != 0)
            .map(|(i, m)| (i as u16, m))
            .collect())
    }

    pub fn write_peer_moved(&self, service: u16, m: &PeerMoved) -> std::io::Result<()> {
        update(fd(&self.peer_moved), &(service as u32), m)
    }

    pub fn write_status(&self, index: u32, s: &SyncStatus) -> std::io::Result<()> {
        update(fd(&self.sync_status), &index, s)
    }

    pub fn status(&self, index: u32) -> std::io::Result<SyncStatus> {
        lookup(fd(&self.sync_status), &index)
    }

    /// Up to `max` entries of a local (`flows_*`) or peer (`peer_*`) map
    /// from `cursor` on, appended to `out`.
    pub fn read_flows(
        &self,
        peer: bool,
        map: FlowMap,
        cursor: &mut Cursor,
        max: usize,
        out: &mut Vec<(FlowKey, Flow)>,
    ) -> std::io::Result<()> {
        if !peer {
            // This host's tables: the cursor's token is the next set.
            let clock = self.settings()?.clock;
            let mut set = cursor.token as u32;
            let tcp = matches!(map, FlowMap::Tcp4 | FlowMap::Tcp6);
            let i = if tcp { 0 } else { 1 };
            cursor.started = true;
            cursor.done = if map.v6() {
                let mut v = Vec::new();
                let done = self.flows6[i].read(&mut set, max, clock, &mut v);
                out.extend(v.into_iter().map(|(k, f)| (FlowKey::V6(k), f)));
                done
            } else {
                let mut v = Vec::new();
                let done = self.flows4[i].read(&mut set, max, clock, &mut v);
                out.extend(v.into_iter().map(|(k, f)| (FlowKey::V4(k), f)));
                done
            };
            cursor.token = set as u64;
            return Ok(());
        }
        let m = &self.peers[map as usize];
        if map.v6() {
            let (k, v) = lookup_chunk::<Flow6, Flow>(fd(m), cursor, max)?;
            out.extend(k.into_iter().map(FlowKey::V6).zip(v));
        } else {
            let (k, v) = lookup_chunk::<Flow4, Flow>(fd(m), cursor, max)?;
            out.extend(k.into_iter().map(FlowKey::V4).zip(v));
        }
        Ok(())
    }

    /// One peer flow, if present (for tools and tests).
    pub fn peer_flow(&self, map: FlowMap, key: &FlowKey) -> Option<Flow> {
        let m = fd(&self.peers[map as usize]);
        match key {
            FlowKey::V4(k) => lookup(m, k).ok(),
            FlowKey::V6(k) => lookup(m, k).ok(),
        }
    }

    /// Every entry of a local or peer map (for tools and tests).
    pub fn all_flows(&self, peer: bool, map: FlowMap) -> std::io::Result<Vec<(FlowKey, Flow)>> {
        let mut out = Vec::new();
        let mut cursor = Cursor::default();
        while !cursor.done {
            self.read_flows(peer, map, &mut cursor, 65_536, &mut out)?;
        }
        Ok(out)
    }

    /// Writes peer flows of one map; returns how many were written.
    pub fn write_peers(&self, map: FlowMap, entries: &[(FlowKey, Flow)]) -> usize {
        let m = fd(&self.peers[map as usize]);
        let values: Vec<Flow> = entries.iter().map(|(_, v)| *v).collect();
        if map.v6() {
            let keys: Vec<Flow6> = entries
                .iter()
                .filter_map(|(k, _)| match k {
                    FlowKey::V6(k) => Some(*k),
                    FlowKey::V4(_) => None,
                })
                .collect();
            update_batch(m, &keys, &values)
        } else {
            let keys: Vec<Flow4> = entries
                .iter()
                .filter_map(|(k, _)| match k {
                    FlowKey::V4(k) => Some(*k),
                    FlowKey::V6(_) => None,
                })
                .collect();
            update_batch(m, &keys, &values)
        }
    }

    /// Deletes peer flows of one map (those absent are skipped); returns
    /// how many it deleted.
    pub fn delete_peers(&self, map: FlowMap, keys: &[FlowKey]) -> usize {
        let m = fd(&self.peers[map as usize]);
        if map.v6() {
            let k: Vec<Flow6> = keys
                .iter()
                .filter_map(|k| match k {
                    FlowKey::V6(k) => Some(*k),
                    FlowKey::V4(_) => None,
                })
                .collect();
            delete_batch(m, &k, "deleting peer flows")
        } else {
            let k: Vec<Flow4> = keys
                .iter()
                .filter_map(|k| match k {
                    FlowKey::V4(k) => Some(*k),
                    FlowKey::V6(_) => None,
                })
                .collect();
            delete_batch(m, &k, "deleting peer flows")
        }
    }
}
