//! The data plane's hashes (`bpf/hash.h`), bit for bit, and the 64-bit
//! hash behind the rendezvous tables.

use crate::maps::SvcKey;

/// `vc5_mix`: the lowbias32 finaliser.
pub fn mix(mut h: u32) -> u32 {
    h ^= h >> 16;
    h = h.wrapping_mul(0x7feb_352d);
    h ^= h >> 15;
    h = h.wrapping_mul(0x846c_a68b);
    h ^= h >> 16;
    h
}

/// `vc5_fold6`: an address's bytes as four host-order words, xor-ed.
pub fn fold(addr: &[u8; 16]) -> u32 {
    addr.chunks_exact(4)
        .map(|c| u32::from_ne_bytes([c[0], c[1], c[2], c[3]]))
        .fold(0, |a, w| a ^ w)
}

/// `vc5_slot_hash`: where a service key starts probing in `svc_slots`.
pub fn slot_hash(key: &SvcKey, seed: u32) -> u32 {
    let pp = (key.port as u32) | ((key.proto as u32) << 16);
    mix(fold(&key.addr) ^ seed ^ pp.wrapping_mul(0x9e37_79b1))
}

/// `vc5_flow_hash`: the bucket of a flow in its service's lookup table,
/// from the client's and VIP's addresses and the ports (network order).
pub fn flow_hash(saddr: &[u8; 16], daddr: &[u8; 16], sport: u16, dport: u16, proto: u8) -> u32 {
    let h = mix(fold(saddr) ^ 0x2545_f491);
    let h = mix(h ^ fold(daddr));
    mix(h ^ ((sport as u32) | ((dport as u32) << 16)) ^ proto as u32)
}

/// A 64-bit finaliser (splitmix64's), for the rendezvous scores.
pub fn mix64(mut z: u64) -> u64 {
    z = (z ^ (z >> 30)).wrapping_mul(0xbf58_476d_1ce4_e5b9);
    z = (z ^ (z >> 27)).wrapping_mul(0x94d0_49bb_1331_11eb);
    z ^ (z >> 31)
}

/// A 64-bit hash of bytes, stable across hosts and versions: the
/// rendezvous tables of every load balancer must agree.
pub fn hash_bytes(bytes: &[u8]) -> u64 {
    bytes.chunks(8).fold(0x6a09_e667_f3bc_c908, |h, c| {
        let mut w = [0u8; 8];
        w[..c.len()].copy_from_slice(c);
        mix64(h ^ u64::from_le_bytes(w))
    })
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::net::{IpAddr, Ipv4Addr};

    #[test]
    fn v4_fold_matches_the_c_shortcut() {
        // C folds IPv4 as daddr ^ VC5_V4_FOLD without building the mapped
        // address; both must agree.
        let a = Ipv4Addr::new(192, 0, 2, 80);
        let mapped = crate::maps::addr16(IpAddr::V4(a));
        let raw = u32::from_ne_bytes(a.octets());
        assert_eq!(fold(&mapped), raw ^ 0xffff_0000);
    }

    #[test]
    fn mix_is_a_permutation_on_a_sample() {
        let mut seen = std::collections::HashSet::new();
        for i in 0..10_000u32 {
            assert!(seen.insert(mix(i)));
        }
    }
}
