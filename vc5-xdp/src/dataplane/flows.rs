//! The flow tables and the peers' flow tables, read and written from user
//! space (vc5-flowsync, the benchmark and the tests).

use super::*;

impl DataPlane {
    /// Sets `sync_status[0].on`, which makes the program write flow
    /// events. In production only vc5-flowsync writes `sync_status`: this
    /// is for tests and the benchmark.
    pub fn set_sync_on(&mut self, on: bool) -> Result<(), Error> {
        let mut st = self
            .maps
            .sync_status
            .get(&0, 0)
            .map_err(map_err("sync_status"))?;
        st.on = on as u32;
        self.maps
            .sync_status
            .set(0, st, 0)
            .map_err(map_err("sync_status"))
    }

    /// Writes a peer's IPv4 flow into `peer_tcp4`/`peer_udp4`. In
    /// production only vc5-flowsync writes the peer tables (after setting
    /// the bucket's `peer_moved` bit when the flow's real is not the
    /// bucket's): this is for tests.
    pub fn insert_peer_flow4(&mut self, tcp: bool, key: &Flow4, flow: Flow) -> Result<(), Error> {
        let m = if tcp {
            &mut self.maps.peer_tcp4
        } else {
            &mut self.maps.peer_udp4
        };
        m.insert(key, flow, 0).map_err(map_err("peer flows"))
    }

    /// [`DataPlane::insert_peer_flow4`] for IPv6.
    pub fn insert_peer_flow6(&mut self, tcp: bool, key: &Flow6, flow: Flow) -> Result<(), Error> {
        let m = if tcp {
            &mut self.maps.peer_tcp6
        } else {
            &mut self.maps.peer_udp6
        };
        m.insert(key, flow, 0).map_err(map_err("peer flows"))
    }

    /// A peer's IPv4 flow, if the peer table holds it.
    pub fn peer_flow4(&self, tcp: bool, key: &Flow4) -> Option<Flow> {
        let m = if tcp {
            &self.maps.peer_tcp4
        } else {
            &self.maps.peer_udp4
        };
        m.get(key, 0).ok()
    }

    /// A peer's IPv6 flow, if the peer table holds it.
    pub fn peer_flow6(&self, tcp: bool, key: &Flow6) -> Option<Flow> {
        let m = if tcp {
            &self.maps.peer_tcp6
        } else {
            &self.maps.peer_udp6
        };
        m.get(key, 0).ok()
    }

    /// `peer_moved[index]` of a service (by [`DataPlane::service_index`]).
    pub fn peer_moved(&self, index: u16) -> Result<PeerMoved, Error> {
        self.maps
            .peer_moved
            .get(&(index as u32), 0)
            .map_err(map_err("peer_moved"))
    }

    /// Writes `peer_moved[index]`. In production only vc5-flowsync writes
    /// it: this is for tests.
    pub fn set_peer_moved(&mut self, index: u16, moved: PeerMoved) -> Result<(), Error> {
        self.maps
            .peer_moved
            .set(index as u32, moved, 0)
            .map_err(map_err("peer_moved"))
    }

    /// Number of entries in each flow table (walks the tables: for tests
    /// and occasional status, not for a hot loop).
    pub fn flow_counts(&self) -> [(&'static str, usize); 4] {
        [
            ("tcp4", self.maps.flows_tcp4.len()),
            ("udp4", self.maps.flows_udp4.len()),
            ("tcp6", self.maps.flows_tcp6.len()),
            ("udp6", self.maps.flows_udp6.len()),
        ]
    }

    pub(super) fn table4(&self, tcp: bool) -> &FlowTable<Flow4> {
        if tcp {
            &self.maps.flows_tcp4
        } else {
            &self.maps.flows_udp4
        }
    }

    pub(super) fn table6(&self, tcp: bool) -> &FlowTable<Flow6> {
        if tcp {
            &self.maps.flows_tcp6
        } else {
            &self.maps.flows_udp6
        }
    }

    /// An entry as user space reports it: its stamp widened to the clock.
    pub(super) fn flow_of(&self, v: FlowVal) -> Flow {
        Flow {
            backend: v.backend as u32,
            seen: widen(v.seen, self.settings.clock),
        }
    }

    /// The backend index a TCP/IPv4 flow is pinned to, if any.
    pub fn flow4(&self, tcp: bool, key: &Flow4) -> Option<u32> {
        self.flow_entry4(tcp, key).map(|f| f.backend)
    }

    /// A TCP/IPv4 flow's entry (its backend and "seen" stamp), if any.
    pub fn flow_entry4(&self, tcp: bool, key: &Flow4) -> Option<Flow> {
        self.table4(tcp).get(key).map(|v| self.flow_of(v))
    }

    /// Writes an IPv4 flow entry where the program would (for tests and
    /// the benchmark).
    pub fn insert_flow4(&mut self, tcp: bool, key: &Flow4, flow: Flow) -> Result<Put, Error> {
        let b = backend16(flow.backend)?;
        Ok(self.table4(tcp).insert(key, b, flow.seen as u16))
    }

    /// Writes an IPv6 flow entry where the program would.
    pub fn insert_flow6(&mut self, tcp: bool, key: &Flow6, flow: Flow) -> Result<Put, Error> {
        let b = backend16(flow.backend)?;
        Ok(self.table6(tcp).insert(key, b, flow.seen as u16))
    }

    /// The backend index an IPv6 flow is pinned to, if any.
    pub fn flow6(&self, tcp: bool, key: &Flow6) -> Option<u32> {
        self.table6(tcp).get(key).map(|v| v.backend as u32)
    }

    /// Forgets an IPv4 flow (its next packet is treated as new).
    pub fn remove_flow4(&mut self, tcp: bool, key: &Flow4) -> Result<(), Error> {
        self.table4(tcp).remove(key);
        Ok(())
    }

    /// Forgets an IPv6 flow.
    pub fn remove_flow6(&mut self, tcp: bool, key: &Flow6) -> Result<(), Error> {
        self.table6(tcp).remove(key);
        Ok(())
    }

    /// The mapped IPv4 flow table of TCP or UDP (for the benchmark and tools).
    pub fn flow_table4(&self, tcp: bool) -> Arc<FlowTable<Flow4>> {
        if tcp {
            self.maps.flows_tcp4.clone()
        } else {
            self.maps.flows_udp4.clone()
        }
    }

    /// The mapped IPv6 flow table of TCP or UDP.
    pub fn flow_table6(&self, tcp: bool) -> Arc<FlowTable<Flow6>> {
        if tcp {
            self.maps.flows_tcp6.clone()
        } else {
            self.maps.flows_udp6.clone()
        }
    }
}
