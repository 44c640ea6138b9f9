//! Raw `bpf(2)` map commands that aya 0.14 lacks (the batch ones) or
//! that are needed on a bare fd: one copy for vc5d's sweep
//! ([`crate::dataplane`]), vc5-flowsync's map access
//! ([`crate::flowsync::pinned`]) and the benchmark's flow-table fills.

use std::os::fd::RawFd;

use crate::flowsync::engine::Cursor;
use crate::maps::Flow;

/// `union bpf_attr` for the element commands.
#[repr(C)]
#[derive(Default)]
struct ElemAttr {
    map_fd: u32,
    _pad: u32,
    key: u64,
    value: u64,
    flags: u64,
}

/// `union bpf_attr` for the batch commands.
#[repr(C)]
#[derive(Default)]
struct BatchAttr {
    in_batch: u64,
    out_batch: u64,
    keys: u64,
    values: u64,
    count: u32,
    map_fd: u32,
    elem_flags: u64,
    flags: u64,
}

// The kernel's layout of those members of `union bpf_attr` (uapi
// linux/bpf.h), which is stable; bpf() passes only this many bytes
// (size_of::<A>()).
const _: () = assert!(core::mem::size_of::<ElemAttr>() == 32);
const _: () = assert!(core::mem::offset_of!(ElemAttr, key) == 8);
const _: () = assert!(core::mem::offset_of!(ElemAttr, value) == 16);
const _: () = assert!(core::mem::offset_of!(ElemAttr, flags) == 24);
const _: () = assert!(core::mem::size_of::<BatchAttr>() == 56);
const _: () = assert!(core::mem::offset_of!(BatchAttr, count) == 32);
const _: () = assert!(core::mem::offset_of!(BatchAttr, map_fd) == 36);
const _: () = assert!(core::mem::offset_of!(BatchAttr, elem_flags) == 40);
const _: () = assert!(core::mem::offset_of!(BatchAttr, flags) == 48);

const BPF_MAP_LOOKUP_ELEM: libc::c_long = 1;
const BPF_MAP_UPDATE_ELEM: libc::c_long = 2;
const BPF_MAP_LOOKUP_BATCH: libc::c_long = 24;
const BPF_MAP_UPDATE_BATCH: libc::c_long = 26;
const BPF_MAP_DELETE_BATCH: libc::c_long = 27;

/// # Safety
/// `attr` must be the attribute struct of `cmd`, its pointers valid for
/// what the command reads and writes.
unsafe fn bpf<A>(cmd: libc::c_long, attr: &mut A) -> std::io::Result<()> {
    // SAFETY: as the caller promises.
    let r = unsafe { libc::syscall(libc::SYS_bpf, cmd, attr as *mut A, std::mem::size_of::<A>()) };
    if r < 0 {
        return Err(std::io::Error::last_os_error());
    }
    Ok(())
}

pub(crate) fn lookup<K: aya::Pod, V: aya::Pod + Default>(fd: RawFd, key: &K) -> std::io::Result<V> {
    let mut v = V::default();
    let mut attr = ElemAttr {
        map_fd: fd as u32,
        key: key as *const K as u64,
        value: &mut v as *mut V as u64,
        ..ElemAttr::default()
    };
    // SAFETY: key and value are of the map's sizes (checked at open).
    unsafe { bpf(BPF_MAP_LOOKUP_ELEM, &mut attr) }?;
    Ok(v)
}

pub(crate) fn update<K: aya::Pod, V: aya::Pod>(
    fd: RawFd,
    key: &K,
    value: &V,
) -> std::io::Result<()> {
    let mut attr = ElemAttr {
        map_fd: fd as u32,
        key: key as *const K as u64,
        value: value as *const V as u64,
        flags: 0, // BPF_ANY
        ..ElemAttr::default()
    };
    // SAFETY: key and value are of the map's sizes (checked at open).
    unsafe { bpf(BPF_MAP_UPDATE_ELEM, &mut attr) }
}

/// Calls `f` for every entry of a hash map, read with
/// BPF_MAP_LOOKUP_BATCH: thousands of entries per system call, where
/// aya's iterator makes two per entry (next key, then lookup).
pub(crate) fn lookup_all<K: aya::Pod + Default, V: aya::Pod + Default>(
    fd: RawFd,
    mut f: impl FnMut(&K, &V),
) -> std::io::Result<()> {
    let mut cursor = Cursor::default();
    while !cursor.done {
        let (keys, values) = lookup_chunk::<K, V>(fd, &mut cursor, 4096)?;
        for (k, v) in keys.iter().zip(&values) {
            f(k, v);
        }
    }
    Ok(())
}

/// Up to `max` entries from `cursor` on (whole hash buckets; the buffer
/// grows when one bucket holds more). Sets `cursor.done` after the last.
pub(crate) fn lookup_chunk<K: aya::Pod + Default, V: aya::Pod + Default>(
    fd: RawFd,
    cursor: &mut Cursor,
    max: usize,
) -> std::io::Result<(Vec<K>, Vec<V>)> {
    let mut n = max.clamp(1, 1 << 20);
    loop {
        let mut keys = vec![K::default(); n];
        let mut values = vec![V::default(); n];
        let token = [cursor.token];
        let mut next = [0u64];
        let mut attr = BatchAttr {
            in_batch: if cursor.started {
                token.as_ptr() as u64
            } else {
                0
            },
            out_batch: next.as_mut_ptr() as u64,
            keys: keys.as_mut_ptr() as u64,
            values: values.as_mut_ptr() as u64,
            count: n as u32,
            map_fd: fd as u32,
            ..BatchAttr::default()
        };
        // SAFETY: buffers of `count` keys and values of the map's sizes
        // (K and V, checked at open), and two token words (a hash map's
        // token is a u32 bucket, an array's a u32 key) that outlive the call.
        let err = unsafe { bpf(BPF_MAP_LOOKUP_BATCH, &mut attr) }.err();
        match err.as_ref().and_then(std::io::Error::raw_os_error) {
            Some(libc::ENOSPC) if n < 1 << 20 => {
                n *= 2;
                continue;
            }
            Some(libc::ENOENT) => cursor.done = true,
            None => {
                cursor.token = next[0];
                cursor.started = true;
            }
            Some(_) => return Err(err.expect("matched an error")),
        }
        let got = (attr.count as usize).min(n);
        keys.truncate(got);
        values.truncate(got);
        return Ok((keys, values));
    }
}

/// `count` entries of an array map from index `start` on.
pub(crate) fn read_array<V: aya::Pod + Default>(
    fd: RawFd,
    start: u32,
    count: u32,
) -> std::io::Result<Vec<V>> {
    let mut out = Vec::with_capacity(count as usize);
    // An array's batch token is the last key read: start after start - 1.
    let mut cursor = Cursor {
        token: start.wrapping_sub(1) as u64,
        started: start > 0,
        done: false,
    };
    while out.len() < count as usize && !cursor.done {
        let want = (count as usize - out.len()).min(16384);
        let (_, v) = lookup_chunk::<u32, V>(fd, &mut cursor, want)?;
        if v.is_empty() && !cursor.done {
            break;
        }
        out.extend(v);
    }
    out.truncate(count as usize);
    Ok(out)
}

/// BPF_MAP_UPDATE_BATCH of `keys` and `values` (equal lengths); an entry
/// the kernel refuses is skipped. Returns how many were written.
pub fn update_batch<K: aya::Pod>(fd: RawFd, keys: &[K], values: &[Flow]) -> usize {
    let len = keys.len().min(values.len());
    let mut done = 0;
    let mut at = 0;
    while at < len {
        let mut attr = BatchAttr {
            keys: keys[at..].as_ptr() as u64,
            values: values[at..].as_ptr() as u64,
            count: (len - at).min(u32::MAX as usize) as u32,
            map_fd: fd as u32,
            ..BatchAttr::default()
        };
        // SAFETY: keys[at..] and values[at..] hold at least `count`
        // entries of the map's key and value types.
        let r = unsafe { bpf(BPF_MAP_UPDATE_BATCH, &mut attr) };
        let n = (attr.count as usize).min(len - at);
        done += n;
        at += n;
        if let Err(e) = r {
            tracing::warn!(error = %e, "writing flows");
            at += 1;
        }
    }
    done
}

/// BPF_MAP_DELETE_BATCH, skipping keys already gone (the kernel stops at
/// the first such) and, with a warning naming `what`, any it refuses.
/// Returns how many it deleted.
pub fn delete_batch<K: aya::Pod>(fd: RawFd, keys: &[K], what: &str) -> usize {
    let mut done = 0;
    let mut at = 0;
    while at < keys.len() {
        let mut attr = BatchAttr {
            keys: keys[at..].as_ptr() as u64,
            count: (keys.len() - at).min(u32::MAX as usize) as u32,
            map_fd: fd as u32,
            ..BatchAttr::default()
        };
        // SAFETY: keys[at..] holds at least `count` keys of type K.
        let r = unsafe { bpf(BPF_MAP_DELETE_BATCH, &mut attr) };
        let n = (attr.count as usize).min(keys.len() - at);
        done += n;
        at += n;
        match r {
            Ok(()) => {}
            Err(e) if e.raw_os_error() == Some(libc::ENOENT) => at += 1,
            Err(e) => {
                tracing::warn!(error = %e, "{what}");
                at += 1;
            }
        }
    }
    done
}
