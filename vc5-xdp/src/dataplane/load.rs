//! Loading the program, reusing or pinning its maps, checking pinned maps
//! against this build, and attaching to and detaching from interfaces.

use super::*;

/// What `attach` did.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Attached {
    pub ifname: String,
    /// The mode asked for, or "pinned" when an existing link was reused
    /// (its mode is the one it was created with).
    pub mode: String,
    pub reused: bool,
}

/// An error and its sources, for a log line.
pub(super) fn chain(e: &dyn std::error::Error) -> String {
    let mut s = e.to_string();
    let mut cur = e.source();
    while let Some(c) = cur {
        s.push_str(": ");
        s.push_str(&c.to_string());
        cur = c.source();
    }
    s
}

/// Is `dir` (or its nearest existing ancestor) on a bpffs?
pub(super) fn on_bpffs(dir: &Path) -> std::io::Result<bool> {
    const BPF_FS_MAGIC: i64 = 0xcafe_4a11;
    let mut p = dir.to_path_buf();
    while !p.exists() {
        if !p.pop() {
            return Ok(false);
        }
    }
    let c = std::ffi::CString::new(p.as_os_str().as_encoded_bytes())
        .map_err(|e| std::io::Error::new(std::io::ErrorKind::InvalidInput, e))?;
    // SAFETY: statfs is plain integers, for which all-zero is valid.
    let mut st: libc::statfs = unsafe { std::mem::zeroed() };
    // SAFETY: c is a valid NUL-terminated path and st a valid out-pointer.
    if unsafe { libc::statfs(c.as_ptr(), &mut st) } != 0 {
        return Err(std::io::Error::last_os_error());
    }
    Ok(st.f_type as i64 == BPF_FS_MAGIC)
}

/// Key and value sizes of a map, in bytes.
pub(super) type KeyValue = (usize, usize);

/// What a pinned map must look like to be re-used by this build: name,
/// type and, where they mean something, key and value sizes (a ring
/// buffer has neither).
pub(super) fn expected_maps() -> [(&'static str, MapType, Option<KeyValue>); 24] {
    use std::mem::size_of;
    let array = |v: usize| Some((4, v));
    let flows4 = Some((size_of::<Flow4>(), size_of::<Flow>()));
    let flows6 = Some((size_of::<Flow6>(), size_of::<Flow>()));
    let sets4 = array(size_of::<Set4>());
    let sets6 = array(size_of::<Set6>());
    [
        ("settings", MapType::Array, array(size_of::<Settings>())),
        ("svc_slots", MapType::Array, array(size_of::<SvcSlot>())),
        ("tables", MapType::Array, array(size_of::<Table>())),
        ("backends", MapType::Array, array(size_of::<Backend>())),
        ("stats", MapType::PerCpuArray, array(size_of::<Counter>())),
        (
            "backend_stats",
            MapType::PerCpuArray,
            array(size_of::<BackendStats>()),
        ),
        (
            "service_drops",
            MapType::PerCpuArray,
            array(size_of::<Counter>()),
        ),
        ("flows_tcp4", MapType::Array, sets4),
        ("flows_udp4", MapType::Array, sets4),
        ("flows_tcp6", MapType::Array, sets6),
        ("flows_udp6", MapType::Array, sets6),
        ("peer_tcp4", MapType::LruHash, flows4),
        ("peer_udp4", MapType::LruHash, flows4),
        ("peer_tcp6", MapType::LruHash, flows6),
        ("peer_udp6", MapType::LruHash, flows6),
        ("peer_moved", MapType::Array, array(size_of::<PeerMoved>())),
        ("flow_events", MapType::RingBuf, None),
        (
            "flow_events_lost",
            MapType::PerCpuArray,
            array(size_of::<u64>()),
        ),
        (
            "sync_status",
            MapType::Array,
            array(size_of::<SyncStatus>()),
        ),
        (
            "cpu_state",
            MapType::PerCpuArray,
            array(size_of::<CpuState>()),
        ),
        ("probe_cfg", MapType::Array, array(size_of::<ProbeCfg>())),
        ("probes", MapType::Array, array(size_of::<Probe>())),
        (
            "probe_replies",
            MapType::LruHash,
            Some((size_of::<ProbeKey>(), size_of::<u32>())),
        ),
        (
            "probe_stats",
            MapType::PerCpuArray,
            array(size_of::<Counter>()),
        ),
    ]
}

pub(super) fn check_pinned(dir: &Path) -> Result<(), Error> {
    let maps = dir.join("maps");
    for (name, ty, kv) in expected_maps() {
        let path = maps.join(name);
        if !path.exists() {
            continue;
        }
        let info = MapInfo::from_pin(&path).map_err(map_err(name))?;
        let have_ty = info.map_type().map_err(map_err(name))?;
        let mut what = Vec::new();
        if have_ty != ty {
            what.push(format!("type {have_ty:?}, expected {ty:?}"));
        }
        if let Some((k, v)) = kv {
            if info.key_size() as usize != k {
                what.push(format!("key size {}, expected {k}", info.key_size()));
            }
            if info.value_size() as usize != v {
                what.push(format!("value size {}, expected {v}", info.value_size()));
            }
        }
        if name.starts_with("flows_") {
            if info.map_flags() & BPF_F_MMAPABLE == 0 {
                what.push("not mmapable".to_string());
            }
            if !info.max_entries().is_power_of_two() {
                what.push(format!("{} sets, not a power of two", info.max_entries()));
            }
        }
        if name == "svc_slots" && info.max_entries() != 2 * SLOTS {
            what.push(format!(
                "{} entries, expected {}",
                info.max_entries(),
                2 * SLOTS
            ));
        }
        if !what.is_empty() {
            return Err(Error::Incompatible {
                path,
                dir: dir.to_path_buf(),
                what: what.join(", "),
            });
        }
    }
    Ok(())
}

/// `BPF_F_MMAPABLE`, which the flow tables must have.
pub(super) const BPF_F_MMAPABLE: u32 = 1 << 10;

/// A flow table of the loaded object, mapped into memory.
pub(super) fn mapped<K: crate::flowtable::WayKey>(
    ebpf: &Ebpf,
    name: &'static str,
    sets: u32,
    proto: u8,
) -> Result<Arc<FlowTable<K>>, Error> {
    use std::os::fd::AsFd;
    let m = ebpf.map(name).ok_or(Error::Map {
        name,
        source: aya::maps::MapError::InvalidName { name: name.into() },
    })?;
    let data = match m {
        aya::maps::Map::Array(d) => d,
        _ => return Err(Error::Pin(format!("{name} is not an array"))),
    };
    let t = FlowTable::map(data.fd().as_fd(), sets, proto)?;
    Ok(Arc::new(t))
}

pub(super) fn take<T>(ebpf: &mut Ebpf, name: &'static str) -> Result<T, Error>
where
    T: TryFrom<aya::maps::Map, Error = aya::maps::MapError>,
{
    let m = ebpf.take_map(name).ok_or(Error::Map {
        name,
        source: aya::maps::MapError::InvalidName { name: name.into() },
    })?;
    T::try_from(m).map_err(map_err(name))
}

impl DataPlane {
    /// Loads the program against the maps pinned under `dir` (creating
    /// them, with `sizes`, when absent) and recovers the index allocation
    /// a previous vc5d left in them. Nothing is attached yet.
    pub fn open(dir: &Path, sizes: MapSizes) -> Result<Self, Error> {
        Self::open_object(dir, sizes, VC5_OBJ)
    }

    /// [`DataPlane::open`] with another build of the program (the benchmark's).
    pub fn open_object(dir: &Path, sizes: MapSizes, object: &[u8]) -> Result<Self, Error> {
        if !on_bpffs(dir)? {
            return Err(Error::NotBpffs {
                dir: dir.to_path_buf(),
            });
        }
        std::fs::create_dir_all(dir.join("maps"))?;
        std::fs::create_dir_all(dir.join("links"))?;
        check_pinned(dir)?;

        let maps_dir = dir.join("maps");
        // Sets of each flow table: the pinned table's, or the size asked.
        let sets = |name: &str, flows: u32| -> Result<u32, Error> {
            let path = maps_dir.join(name);
            if path.exists() {
                let info = MapInfo::from_pin(&path).map_err(map_err("flows"))?;
                return Ok(info.max_entries());
            }
            let n = (flows / WAYS as u32).max(1);
            if !n.is_power_of_two() {
                return Err(Error::Pin(format!(
                    "{name}: {flows} flows is not {WAYS} ways times a power of two"
                )));
            }
            Ok(n)
        };
        let flow_sets = [
            sets("flows_tcp4", sizes.flows_tcp4)?,
            sets("flows_udp4", sizes.flows_udp4)?,
            sets("flows_tcp6", sizes.flows_tcp6)?,
            sets("flows_udp6", sizes.flows_udp6)?,
        ];
        let masks = flow_sets.map(|n| n - 1);
        let mut ebpf = EbpfLoader::new()
            .default_map_pin_directory(&maps_dir)
            .override_global("vc5_flow_mask", &masks, true)
            .map_max_entries("tables", sizes.services)
            .map_max_entries("service_drops", sizes.services)
            .map_max_entries("backends", sizes.backends)
            .map_max_entries("backend_stats", sizes.backends)
            .map_max_entries("flows_tcp4", flow_sets[0])
            .map_max_entries("flows_udp4", flow_sets[1])
            .map_max_entries("flows_tcp6", flow_sets[2])
            .map_max_entries("flows_udp6", flow_sets[3])
            // Room for every peer's flows as for our own: a flow a peer
            // holds is one this host may have to take over.
            .map_max_entries("peer_tcp4", sizes.flows_tcp4)
            .map_max_entries("peer_tcp6", sizes.flows_tcp6)
            .map_max_entries("peer_udp4", sizes.flows_udp4)
            .map_max_entries("peer_udp6", sizes.flows_udp6)
            .map_max_entries("peer_moved", sizes.services)
            .load(object)?;
        let prog: &mut Xdp = ebpf
            .program_mut(PROGRAM)
            .ok_or_else(|| Error::Pin(format!("no program {PROGRAM} in the object")))?
            .try_into()?;
        prog.load()?;

        let maps = Maps {
            settings: take(&mut ebpf, "settings")?,
            slots: take(&mut ebpf, "svc_slots")?,
            tables: take(&mut ebpf, "tables")?,
            backends: take(&mut ebpf, "backends")?,
            stats: take(&mut ebpf, "stats")?,
            backend_stats: take(&mut ebpf, "backend_stats")?,
            service_drops: take(&mut ebpf, "service_drops")?,
            flows_tcp4: mapped(&ebpf, "flows_tcp4", flow_sets[0], TCP)?,
            flows_tcp6: mapped(&ebpf, "flows_tcp6", flow_sets[2], TCP)?,
            flows_udp4: mapped(&ebpf, "flows_udp4", flow_sets[1], UDP)?,
            flows_udp6: mapped(&ebpf, "flows_udp6", flow_sets[3], UDP)?,
            peer_tcp4: take(&mut ebpf, "peer_tcp4")?,
            peer_tcp6: take(&mut ebpf, "peer_tcp6")?,
            peer_udp4: take(&mut ebpf, "peer_udp4")?,
            peer_udp6: take(&mut ebpf, "peer_udp6")?,
            peer_moved: take(&mut ebpf, "peer_moved")?,
            sync_status: take(&mut ebpf, "sync_status")?,
            flow_events_lost: take(&mut ebpf, "flow_events_lost")?,
            cpu_state: take(&mut ebpf, "cpu_state")?,
            probe_cfg: take(&mut ebpf, "probe_cfg")?,
            probes: take(&mut ebpf, "probes")?,
            probe_stats: take(&mut ebpf, "probe_stats")?,
        };
        // The sizes in force are those of the (possibly older) pinned maps.
        let sizes = MapSizes {
            services: maps.tables.len(),
            backends: maps.backends.len(),
            ..sizes
        };
        let nr_cpus = aya::util::nr_cpus().map_err(|(_, e)| Error::Io(e))?;
        let mut dp = DataPlane {
            ebpf,
            dir: dir.to_path_buf(),
            maps,
            sizes,
            nr_cpus,
            services: HashMap::new(),
            vips: HashMap::new(),
            backends: HashMap::new(),
            service_ids: Ids::new(sizes.services.min(u16::MAX as u32 + 1)),
            vip_ids: Ids::new(u16::MAX as u32 + 1),
            backend_ids: Ids::new(sizes.backends.min(u16::MAX as u32 + 1)),
            probes: HashMap::new(),
            probes_synced: false,
            retired: HashMap::new(),
            moved_since: HashMap::new(),
            moved_at: HashMap::new(),
            half_used: [None, None],
            settings: Settings::default(),
            clock_start: 0,
            idle_timeout: TCP_IDLE_TIMEOUT,
        };
        dp.recover()?;
        if dp.settings.generation == 0 && dp.settings.insert_limit == 0 {
            // Maps never programmed: the program's default bound.
            let mut s = dp.settings;
            s.insert_limit = INSERT_LIMIT;
            dp.write_settings(s)?;
        }
        let now = boot_seconds();
        dp.set_clock(now)?;
        dp.clock_start = now;
        Ok(dp)
    }

    /// Rebuilds the allocation from what the maps hold: the live half of
    /// the service slots and every backend entry.
    pub(super) fn recover(&mut self) -> Result<(), Error> {
        self.settings = self.maps.settings.get(&0, 0).map_err(map_err("settings"))?;
        let half = self.settings.active & 1;
        let mut used = HashSet::new();
        let mut by_index: HashMap<u16, SvcId> = HashMap::new();
        for i in 0..SLOTS {
            let idx = (half << SLOT_BITS) | i;
            let s = self.maps.slots.get(&idx, 0).map_err(map_err("svc_slots"))?;
            if s.vip == 0 {
                continue;
            }
            used.insert(idx);
            let addr = s.key.addr();
            self.vips.insert(addr, s.vip);
            self.vip_ids.take(s.vip as u32);
            if s.service != 0 {
                let id = (addr, s.key.port(), s.key.proto);
                self.service_ids.take(s.service as u32);
                by_index.insert(s.service, id);
                // The table as written, moved marks included: the next
                // programming compares against it.
                let table = self
                    .maps
                    .tables
                    .get(&(s.service as u32), 0)
                    .map_err(map_err("tables"))?;
                self.services.insert(
                    id,
                    SvcState {
                        index: s.service,
                        vip: s.vip,
                        table: Some(Box::new(table)),
                        cands: None,
                    },
                );
            }
        }
        self.half_used[half as usize] = Some(used);
        for i in 1..self.sizes.backends.min(u16::MAX as u32 + 1) {
            let b = self.maps.backends.get(&i, 0).map_err(map_err("backends"))?;
            if b.service == 0 || !by_index.contains_key(&b.service) {
                continue;
            }
            self.backend_ids.take(i);
            self.backends
                .insert((b.service, ip_from16(b.addr)), (i as u16, b));
        }
        if !self.services.is_empty() {
            info!(
                services = self.services.len(),
                backends = self.backends.len(),
                "recovered data-plane state from pinned maps"
            );
        }
        Ok(())
    }

    /// Sets the clock the program stamps flows with (seconds). vc5d ticks
    /// it with [`DataPlane::tick_clock`]; tests set it to age flows.
    pub fn set_clock(&mut self, now: u32) -> Result<(), Error> {
        let mut s = self.settings;
        s.clock = now;
        // Only the clock differs from what is in the map: a packet that
        // reads the entry meanwhile sees the same slots either way.
        self.write_settings(s)
    }

    /// Writes `settings[0]` and keeps our copy of it.
    pub(super) fn write_settings(&mut self, s: Settings) -> Result<(), Error> {
        self.maps
            .settings
            .set(0, s, 0)
            .map_err(map_err("settings"))?;
        self.settings = s;
        Ok(())
    }

    /// Sets the clock to [`boot_seconds`]. Call it regularly (vc5d does at
    /// every sweep interval): a flow's `seen` stamp is only as fine as this.
    pub fn tick_clock(&mut self) -> Result<(), Error> {
        self.set_clock(boot_seconds())
    }

    /// The clock as last set.
    pub fn clock(&self) -> u32 {
        self.settings.clock
    }

    /// The map sizes in force.
    pub fn sizes(&self) -> MapSizes {
        self.sizes
    }

    /// The pin directory.
    pub fn dir(&self) -> &Path {
        &self.dir
    }

    pub(super) fn program_mut(&mut self) -> Result<&mut Xdp, Error> {
        Ok(self
            .ebpf
            .program_mut(PROGRAM)
            .ok_or_else(|| Error::Pin(format!("no program {PROGRAM}")))?
            .try_into()?)
    }

    /// Attaches the program to `ifname`: into the pinned link if one exists
    /// (an atomic swap: no packet is missed), else by a new link, pinned.
    pub fn attach(&mut self, ifname: &str, mode: XdpMode) -> Result<Attached, Error> {
        let cname =
            std::ffi::CString::new(ifname).map_err(|_| Error::NoInterface(ifname.into()))?;
        // SAFETY: a valid C string.
        let ifindex = unsafe { libc::if_nametoindex(cname.as_ptr()) };
        if ifindex == 0 {
            return Err(Error::NoInterface(ifname.into()));
        }
        let pin = self.dir.join("links").join(ifname);
        if pin.exists() {
            match self.swap_into(&pin) {
                Ok(()) => {
                    return Ok(Attached {
                        ifname: ifname.into(),
                        mode: "pinned".into(),
                        reused: true,
                    });
                }
                Err(e) => {
                    // The interface was recreated, or the link is defunct.
                    warn!(%ifname, error = %e, "pinned XDP link unusable, attaching afresh");
                    std::fs::remove_file(&pin)?;
                }
            }
        }
        let tries: &[(XdpMode, AyaMode)] = match mode {
            XdpMode::Auto => &[
                (XdpMode::Native, AyaMode::Driver),
                (XdpMode::Generic, AyaMode::Skb),
            ],
            XdpMode::Native => &[(XdpMode::Native, AyaMode::Driver)],
            XdpMode::Generic => &[(XdpMode::Generic, AyaMode::Skb)],
        };
        let mut last = None;
        for &(m, am) in tries {
            let prog = self.program_mut()?;
            match prog.attach_to_if_index(ifindex, am) {
                Ok(id) => {
                    let link = prog.take_link(id)?;
                    let fd: FdLink = link.try_into().map_err(|e| {
                        Error::Pin(format!("XDP link of {ifname} is not a bpf_link: {e}"))
                    })?;
                    fd.pin(&pin)
                        .map_err(|e| Error::Pin(format!("{}: {e}", pin.display())))?;
                    if mode == XdpMode::Auto && m == XdpMode::Generic {
                        warn!(%ifname, "native XDP refused; running in generic mode");
                    }
                    return Ok(Attached {
                        ifname: ifname.into(),
                        mode: m.to_string(),
                        reused: false,
                    });
                }
                Err(e) => {
                    if mode == XdpMode::Auto {
                        warn!(%ifname, mode = %m, error = %chain(&e), "XDP attach refused");
                    }
                    last = Some((m, e));
                }
            }
        }
        let (m, source) = last.expect("at least one mode tried");
        Err(Error::Attach {
            ifname: ifname.into(),
            mode: m,
            source,
        })
    }

    pub(super) fn swap_into(&mut self, pin: &Path) -> Result<(), Error> {
        let pinned = PinnedLink::from_pin(pin).map_err(|e| Error::Pin(e.to_string()))?;
        let fd: FdLink = pinned.into();
        let link = XdpLink::try_from(fd).map_err(|e| Error::Pin(e.to_string()))?;
        let prog = self.program_mut()?;
        let id = prog.attach_to_link(link)?;
        // The pin keeps the link; our handle may go.
        let link = prog.take_link(id)?;
        drop(link);
        Ok(())
    }

    /// Removes the link of `ifname` (detaching the program there).
    pub fn detach(&mut self, ifname: &str) -> Result<(), Error> {
        let pin = self.dir.join("links").join(ifname);
        if pin.exists() {
            std::fs::remove_file(pin)?;
        }
        Ok(())
    }

    /// Removes the links of interfaces not in `keep` (a previous vc5d was
    /// attached to them); returns their names.
    pub fn detach_others(&mut self, keep: &[String]) -> Result<Vec<String>, Error> {
        let mut gone = Vec::new();
        for e in std::fs::read_dir(self.dir.join("links"))? {
            let e = e?;
            let name = e.file_name().to_string_lossy().into_owned();
            if !keep.contains(&name) {
                std::fs::remove_file(e.path())?;
                gone.push(name);
            }
        }
        Ok(gone)
    }

    /// The loaded XDP program, for `BPF_PROG_TEST_RUN`.
    pub fn xdp(&mut self) -> Result<&mut Xdp, Error> {
        self.program_mut()
    }

    /// Another program of the object (loaded on first use), sharing the
    /// maps: the benchmark's wrapper.
    pub fn xdp_named(&mut self, name: &str) -> Result<&mut Xdp, Error> {
        let p: &mut Xdp = self
            .ebpf
            .program_mut(name)
            .ok_or_else(|| Error::Pin(format!("no program {name}")))?
            .try_into()?;
        if p.fd().is_err() {
            p.load()?;
        }
        Ok(p)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use vc5_testkit::require_root;
    use vc5_testkit::xdp::TempBpffs;

    #[test]
    fn every_pinned_map_is_checked_on_reuse() {
        require_root();
        let fs = TempBpffs::new().unwrap();
        let dir = fs.path().join("vc5");
        let _dp = DataPlane::open(&dir, MapSizes::small()).unwrap();
        let mut pinned: Vec<String> = std::fs::read_dir(dir.join("maps"))
            .unwrap()
            .map(|e| e.unwrap().file_name().to_string_lossy().into_owned())
            .collect();
        pinned.sort();
        let mut checked: Vec<String> = expected_maps().iter().map(|m| m.0.to_string()).collect();
        checked.sort();
        assert_eq!(pinned, checked);
    }

    /// Opens, closes, then puts `from`'s pin where `to`'s was: the next
    /// open must refuse the directory, naming the map and what differs.
    fn refused(from: &str, to: &str) -> String {
        require_root();
        let fs = TempBpffs::new().unwrap();
        let dir = fs.path().join("vc5");
        let dp = DataPlane::open(&dir, MapSizes::small()).unwrap();
        let sizes = dp.sizes();
        drop(dp);
        let maps = dir.join("maps");
        std::fs::remove_file(maps.join(to)).unwrap();
        std::fs::rename(maps.join(from), maps.join(to)).unwrap();
        match DataPlane::open(&dir, sizes) {
            Err(e @ Error::Incompatible { .. }) => e.to_string(),
            Err(e) => panic!("{to}: another error: {e}"),
            Ok(_) => panic!("{to}: a foreign map was accepted"),
        }
    }

    #[test]
    fn pinned_flow_sync_maps_of_another_layout_are_refused() {
        let e = refused("flow_events_lost", "flow_events");
        assert!(e.contains("flow_events") && e.contains("RingBuf"), "{e}");
        let e = refused("sync_status", "peer_moved");
        assert!(e.contains("peer_moved") && e.contains("value size"), "{e}");
        let e = refused("flows_tcp6", "peer_tcp4");
        assert!(e.contains("peer_tcp4") && e.contains("key size"), "{e}");
        let e = refused("settings", "flow_events_lost");
        assert!(
            e.contains("flow_events_lost") && e.contains("PerCpuArray"),
            "{e}"
        );
    }

    #[test]
    fn peer_tables_are_sized_like_the_flow_tables() {
        require_root();
        let fs = TempBpffs::new().unwrap();
        let dir = fs.path().join("vc5");
        let sizes = MapSizes {
            services: 32,
            flows_tcp4: 8192,
            flows_tcp6: 2048,
            flows_udp4: 1024,
            flows_udp6: 512,
            ..MapSizes::small()
        };
        let _dp = DataPlane::open(&dir, sizes).unwrap();
        let max = |name: &str| {
            MapInfo::from_pin(dir.join("maps").join(name))
                .unwrap()
                .max_entries()
        };
        assert_eq!(max("peer_tcp4"), 8192);
        assert_eq!(max("peer_tcp6"), 2048);
        assert_eq!(max("peer_udp4"), 1024);
        assert_eq!(max("peer_udp6"), 512);
        assert_eq!(max("peer_moved"), 32);
        assert_eq!(max("flow_events"), FLOW_EVENTS);
        assert_eq!(max("sync_status"), 1 + SYNC_PEERS);
        // The peer tables share one LRU (one writer fills them all); the
        // local ones are mapped into user space, in sets of WAYS.
        let flags = |name: &str| {
            MapInfo::from_pin(dir.join("maps").join(name))
                .unwrap()
                .map_flags()
        };
        const BPF_F_NO_COMMON_LRU: u32 = 1 << 1;
        assert_eq!(flags("peer_tcp4") & BPF_F_NO_COMMON_LRU, 0);
        assert_ne!(flags("flows_tcp4") & BPF_F_MMAPABLE, 0);
        assert_eq!(max("flows_tcp4"), 8192 / WAYS as u32, "sets of WAYS flows");
    }
}
