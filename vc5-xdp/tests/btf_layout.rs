//! Every map key and value mirrored in `maps.rs` has the size and field
//! offsets that the built object's BTF gives for its C twin in
//! `bpf/shared.h`. The BTF is read with `bpftool btf dump`. The numbers
//! both sides pin at compile time are compared too (that needs no bpftool).

use std::collections::HashMap;
use std::mem::{offset_of, size_of};
use std::process::Command;
use vc5_xdp::dataplane::VC5_OBJ;
use vc5_xdp::maps::*;

type Structs = HashMap<String, (usize, Vec<(String, usize)>)>;

/// struct name -> (size, [(member, byte offset)]), read once for all tests.
fn btf_structs() -> &'static Structs {
    static ONCE: std::sync::OnceLock<Structs> = std::sync::OnceLock::new();
    ONCE.get_or_init(read_btf)
}

fn read_btf() -> Structs {
    let path = std::env::temp_dir().join(format!("vc5-btf-{}.o", std::process::id()));
    std::fs::write(&path, VC5_OBJ).unwrap();
    let out = Command::new("bpftool")
        .args(["btf", "dump", "file"])
        .arg(&path)
        .args(["format", "raw"])
        .output()
        .expect("bpftool (Debian package bpftool) must be installed");
    let _ = std::fs::remove_file(&path);
    assert!(
        out.status.success(),
        "bpftool: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    let text = String::from_utf8(out.stdout).unwrap();
    let mut structs = HashMap::new();
    let mut current: Option<(String, usize, Members<String>)> = None;
    for line in text.lines() {
        if let Some(rest) = line.strip_prefix('[') {
            if let Some((name, size, members)) = current.take() {
                structs.insert(name, (size, members));
            }
            // [37] STRUCT 'vc5_backend' size=40 vlen=7
            let parts: Vec<&str> = rest.split_whitespace().collect();
            if parts.get(1) == Some(&"STRUCT") {
                let name = parts[2].trim_matches('\'').to_string();
                let size = parts[3].trim_start_matches("size=").parse().unwrap();
                current = Some((name, size, Vec::new()));
            }
        } else if let Some((_, _, members)) = current.as_mut() {
            // 'mac' type_id=38 bits_offset=0
            let parts: Vec<&str> = line.split_whitespace().collect();
            let name = parts[0].trim_matches('\'').to_string();
            let bits: usize = parts
                .iter()
                .find_map(|p| p.strip_prefix("bits_offset="))
                .unwrap()
                .parse()
                .unwrap();
            members.push((name, bits / 8));
        }
    }
    if let Some((name, size, members)) = current.take() {
        structs.insert(name, (size, members));
    }
    structs
}

/// A struct's members: name and byte offset, in declaration order.
type Members<N> = Vec<(N, usize)>;

macro_rules! layout {
    ($c:literal, $t:ty, [$($f:ident),* $(,)?]) => {
        ($c, size_of::<$t>(), vec![$((stringify!($f), offset_of!($t, $f))),*])
    };
}

/// Every mirror: its C name, its size and its fields' offsets, in order.
/// `vc5_flow_event` is last: a ring buffer's records leave no type in the
/// BTF, so only the header's assertions pin it.
fn mirrors() -> Vec<(&'static str, usize, Members<&'static str>)> {
    vec![
        layout!(
            "vc5_settings",
            Settings,
            [active, seed, clock, generation, insert_limit]
        ),
        layout!(
            "vc5_cpu_state",
            CpuState,
            [clock, inserts, sample, evicted, refused, full, deep]
        ),
        layout!("vc5_svc_key", SvcKey, [addr, port, proto, _pad]),
        layout!("vc5_svc_slot", SvcSlot, [key, service, vip]),
        layout!("vc5_table", Table, [backend, moved]),
        layout!(
            "vc5_backend",
            Backend,
            [
                mac,
                src_mac,
                ifindex,
                flags,
                service,
                addr,
                epoch,
                tunnel_port,
                src_addr,
                mtu,
                vlan,
                tunnel,
                _pad
            ]
        ),
        layout!(
            "vc5_probe_cfg",
            ProbeCfg,
            [ifindex, trunk, ns_mac, host_mac, src4, ns4, src6, ns6, _pad]
        ),
        layout!("vc5_probe", Probe, [way, vip]),
        layout!("vc5_probe_key", ProbeKey, [vip, vport, lport, proto, _pad]),
        layout!("vc5_flow4", Flow4, [saddr, daddr, sport, dport]),
        layout!("vc5_flow6", Flow6, [saddr, daddr, sport, dport]),
        layout!("vc5_flow", Flow, [backend, seen]),
        layout!("vc5_fval", FlowVal, [backend, seen]),
        layout!("vc5_way4", Way4, [key, v]),
        layout!("vc5_way6", Way6, [key, v]),
        layout!("vc5_set4", Set4, [way]),
        layout!("vc5_set6", Set6, [way]),
        layout!(
            "vc5_cache4",
            Cache4,
            [key, proto, _pad, hits, backend, epoch, clock]
        ),
        layout!(
            "vc5_cache6",
            Cache6,
            [key, proto, _pad, hits, backend, epoch, clock]
        ),
        layout!("vc5_counter", Counter, [packets, bytes]),
        layout!(
            "vc5_backend_stats",
            BackendStats,
            [packets, bytes, new_flows]
        ),
        layout!("vc5_peer_moved", PeerMoved, [bits]),
        layout!(
            "vc5_sync_status",
            SyncStatus,
            [
                on,
                state,
                sender,
                epoch,
                addr,
                started_ms,
                updated_ms,
                datagrams,
                records,
                written,
                gaps,
                unknown_real,
                rate_limited,
                lost,
                delay_p50_us,
                delay_p99_us,
                delay_max_us,
                rejects
            ]
        ),
        layout!(
            "vc5_flow_event",
            FlowEvent,
            [kind, v6, proto, _pad, backend, key]
        ),
    ]
}

#[test]
fn rust_mirrors_match_the_btf_of_the_object() {
    let btf = btf_structs();
    for (name, size, fields) in mirrors() {
        if name == "vc5_flow_event" {
            continue;
        }
        let (bsize, bmembers) = btf
            .get(name)
            .unwrap_or_else(|| panic!("struct {name} not in the object's BTF"));
        assert_eq!(size, *bsize, "size of {name}");
        let bnames: Vec<&str> = bmembers.iter().map(|(n, _)| n.as_str()).collect();
        let rnames: Vec<&str> = fields.iter().map(|(n, _)| *n).collect();
        assert_eq!(rnames, bnames, "fields of {name}");
        for ((f, off), (_, boff)) in fields.iter().zip(bmembers) {
            assert_eq!(off, boff, "offset of {name}.{f}");
        }
    }
}

/// The numbers of shared.h's VC5_ABI_SIZE / VC5_ABI_AT assertions are
/// those of maps.rs's: each side's build checks its own layout against its
/// numbers, this (without bpftool) that the two sets agree and that every
/// struct of shared.h and every field is pinned.
#[test]
fn static_asserts_of_shared_h_match_the_mirrors() {
    let h = include_str!("../bpf/shared.h");
    let args = |l: &str, m: &str| -> Option<Vec<String>> {
        let rest = l.strip_prefix(m)?.strip_suffix(");")?;
        Some(rest.split(',').map(|a| a.trim().to_string()).collect())
    };
    let mut pinned: HashMap<String, (usize, Members<String>)> = HashMap::new();
    for l in h.lines() {
        if let Some(a) = args(l, "VC5_ABI_SIZE(") {
            let prev = pinned.insert(a[0].clone(), (a[1].parse().unwrap(), Vec::new()));
            assert!(prev.is_none(), "{} pinned twice", a[0]);
        } else if let Some(a) = args(l, "VC5_ABI_AT(") {
            let (_, members) = pinned
                .get_mut(&a[0])
                .unwrap_or_else(|| panic!("VC5_ABI_AT({}) before its VC5_ABI_SIZE", a[0]));
            members.push((a[1].clone(), a[2].parse().unwrap()));
        }
    }
    let declared: Vec<&str> = h
        .lines()
        .filter_map(|l| l.strip_prefix("struct ")?.strip_suffix(" {"))
        .collect();
    let mut names: Vec<&str> = pinned.keys().map(String::as_str).collect();
    let mut rust: Vec<&str> = mirrors().iter().map(|m| m.0).collect();
    let mut declared_sorted = declared.clone();
    names.sort_unstable();
    rust.sort_unstable();
    declared_sorted.sort_unstable();
    assert_eq!(
        names, declared_sorted,
        "structs of shared.h pinned by VC5_ABI_SIZE"
    );
    assert_eq!(
        names, rust,
        "structs pinned in shared.h and mirrored in maps.rs"
    );
    for (name, size, fields) in mirrors() {
        let (csize, cmembers) = &pinned[name];
        assert_eq!(size, *csize, "size of {name}");
        let c: Vec<(&str, usize)> = cmembers.iter().map(|(f, o)| (f.as_str(), *o)).collect();
        assert_eq!(fields, c, "fields and offsets of {name}");
    }
}

#[test]
fn table_size_matches_the_c_array() {
    let btf = btf_structs();
    assert_eq!(btf["vc5_table"].0, TABLE_SIZE * 2 + MOVED_WORDS * 8);
}

/// Constants that leave no trace in the BTF, read from the header.
#[test]
fn mirrored_constants_match_consts_h() {
    let h = include_str!("../bpf/consts.h");
    let value = |name: &str| -> u32 {
        let line = h
            .lines()
            .find(|l| l.starts_with(&format!("#define {name} ")))
            .unwrap_or_else(|| panic!("{name} not in consts.h"));
        line.split_whitespace().nth(2).unwrap().parse().unwrap()
    };
    assert_eq!(value("VC5_CACHE_TRUST"), CACHE_TRUST);
    assert_eq!(value("VC5_SLOT_BITS"), SLOT_BITS);
    assert_eq!(value("VC5_PROBES"), PROBES);
    assert_eq!(value("VC5_SYNC_PEERS"), SYNC_PEERS);
    assert_eq!(1 << value("VC5_SAMPLE_BITS"), SAMPLE);
    assert_eq!(value("VC5_PENDING_BITS"), PENDING_BITS);
    assert_eq!(value("VC5_INSERT_LIMIT"), INSERT_LIMIT);
    assert_eq!(value("VC5_WAYS") as usize, WAYS);
    assert_eq!(value("VC5_EVICT_AGE"), EVICT_AGE);
    assert_eq!(value("VC5_SYNC_REASONS") as usize, SYNC_REASONS);
    for (name, v) in [
        ("VC5_EVENT_NEW", EVENT_NEW),
        ("VC5_EVENT_REPIN", EVENT_REPIN),
        ("VC5_EVENT_TAKEOVER", EVENT_TAKEOVER),
        ("VC5_EVENT_REFRESH", EVENT_REFRESH),
    ] {
        assert_eq!(value(name), v as u32, "{name}");
    }
    let hex = |name: &str| -> u16 {
        let line = h
            .lines()
            .find(|l| l.starts_with(&format!("#define {name} ")))
            .unwrap_or_else(|| panic!("{name} not in consts.h"));
        let v = line.split_whitespace().nth(2).unwrap();
        u16::from_str_radix(v.trim_start_matches("0x"), 16).unwrap()
    };
    for (name, v) in [
        ("VC5_BACKEND_USABLE", BACKEND_USABLE),
        ("VC5_BACKEND_OUTER6", BACKEND_OUTER6),
        ("VC5_BACKEND_VLAN", BACKEND_VLAN),
    ] {
        assert_eq!(hex(name), v, "{name}");
    }
    for (name, v) in [
        ("VC5_SYNC_STARTING", SYNC_STARTING),
        ("VC5_SYNC_RESYNCING", SYNC_RESYNCING),
        ("VC5_SYNC_SYNCED", SYNC_SYNCED),
    ] {
        assert_eq!(value(name), v, "{name}");
    }
}
