/* SPDX-License-Identifier: (GPL-2.0-only OR BSD-2-Clause) */
/*
 * vc5 data plane: hashes. vc5-xdp/src/hash.rs computes the same functions
 * bit for bit (user space places services in svc_slots with vc5_slot_hash;
 * tests predict a flow's bucket with vc5_flow_hash).
 *
 * Addresses are folded from their bytes loaded as host-order 32-bit words;
 * IPv4 addresses are treated as ::ffff:a.b.c.d. Every load balancer of one
 * group must therefore share byte order (all of ours are little-endian) for
 * flows to hash to the same real on each of them.
 */
#ifndef VC5_HASH_H
#define VC5_HASH_H

#include <linux/types.h>

/* A 32-bit finaliser (lowbias32): cheap, and every input bit reaches every
 * output bit. */
static __always_inline __u32 vc5_mix(__u32 h)
{
	h ^= h >> 16;
	h *= 0x7feb352dU;
	h ^= h >> 15;
	h *= 0x846ca68bU;
	h ^= h >> 16;
	return h;
}

/* The fold of ::ffff:a.b.c.d is a.b.c.d ^ this (bytes 00 00 ff ff). */
#define VC5_V4_FOLD 0xffff0000U

static __always_inline __u32 vc5_fold6(const __u32 *w)
{
	return w[0] ^ w[1] ^ w[2] ^ w[3];
}

static __always_inline __u32 vc5_slot_hash(__u32 fold, __u16 port, __u8 proto,
					   __u32 seed)
{
	return vc5_mix(fold ^ seed ^
		       (((__u32)port | ((__u32)proto << 16)) * 0x9e3779b1U));
}

static __always_inline __u32 vc5_flow_hash(__u32 sfold, __u32 dfold,
					   __u16 sport, __u16 dport, __u8 proto)
{
	__u32 h = vc5_mix(sfold ^ 0x2545f491U);

	h = vc5_mix(h ^ dfold);
	return vc5_mix(h ^ ((__u32)sport | ((__u32)dport << 16)) ^ proto);
}

#endif
