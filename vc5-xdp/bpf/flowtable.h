/* SPDX-License-Identifier: (GPL-2.0-only OR BSD-2-Clause) */
/*
 * vc5 data plane: this host's flow tables.
 *
 * A table is an array of sets of VC5_WAYS ways (shared.h). A flow has two
 * candidate sets, both derived from its flow hash, and is inserted into
 * the one with more free ways ("the power of two choices": the fullest
 * set then stays far below full until the table itself nearly is). Only
 * when both are full does an insert overwrite a flow, the least recently
 * seen of the eight, and only if it is VC5_EVICT_AGE old: a flood of new
 * flows cannot push out established ones.
 *
 * Why not the kernel's LRU hash: measured with vc5-bench, one insert cost
 * 450-900 ns there (a free-list pop, a bucket lock, and evictions that walk
 * further lists), and a lookup at a million flows two or three dependent
 * cache and TLB misses. Here a lookup or an insert reads two sets (an IPv4
 * set is one cache line) whose misses overlap, and an insert writes one
 * way; array lookups are inlined by the verifier; and user space reads
 * and sweeps the tables in its own memory.
 *
 * No locks: a way is written as whole 8-byte words (atomic on the 64-bit
 * machines vc5 runs on), key words first, the ports and value last. Two
 * CPUs writing one way at the same moment can leave one flow's addresses
 * with the other's ports and value: a 4-tuple no client uses, unless both
 * flows had the same addresses, in which case the way is simply the
 * second flow's. A reader sees each word whole.
 *
 * vc5-xdp/src/flowtable.rs places and finds flows the same way.
 */
#ifndef VC5_FLOWTABLE_H
#define VC5_FLOWTABLE_H

#include <linux/types.h>
#include "consts.h"
#include "hash.h"
#include "maps.h"
#include "shared.h"

/* A flow's first (second = 0) or second candidate set. */
static __always_inline __u32 vc5_set_index(__u32 h, int second, __u32 mask)
{
	return vc5_mix(h ^ (second ? 0x68e31da4U : 0xb5297a4dU)) & mask;
}

/* One call site per map keeps each lookup inlinable by the verifier. */
static __always_inline struct vc5_set4 *vc5_set4(int udp, __u32 i)
{
	if (udp)
		return bpf_map_lookup_elem(&flows_udp4, &i);
	return bpf_map_lookup_elem(&flows_tcp4, &i);
}

static __always_inline struct vc5_set6 *vc5_set6(int udp, __u32 i)
{
	if (udp)
		return bpf_map_lookup_elem(&flows_udp6, &i);
	return bpf_map_lookup_elem(&flows_tcp6, &i);
}

/* The last word of a way: the ports, the backend and the stamp. */
static __always_inline __u64 vc5_tail(__u16 sport, __u16 dport, __u32 backend, __u16 now)
{
	return (__u64)sport | (__u64)dport << 16 | (__u64)(__u16)backend << 32 |
	       (__u64)now << 48;
}

/* Branch-free arithmetic, so that the verifier walks one path through a
 * set instead of one per way and outcome (the first version of these
 * tables, written with ifs, exceeded its million-instruction budget). The
 * empty asm hides the operand from clang, which would otherwise turn the
 * idiom back into a compare and a jump (BPF has no setcc). */
static __always_inline __u64 vc5_nz(__u64 x)
{
	__u64 n = -x;

	asm volatile("" : "+r"(n));
	return (x | n) >> 63;
}

/* 1 when a < b, for a, b below 2^63. */
static __always_inline __u64 vc5_lt(__u64 a, __u64 b)
{
	__u64 d = a - b;

	asm volatile("" : "+r"(d));
	return d >> 63;
}

/* a when c is 0, b when c is 1. */
static __always_inline __u64 vc5_pick(__u64 a, __u64 b, __u64 c)
{
	return a ^ ((a ^ b) & -c);
}

/* The index of the lowest bit set in a nonzero 4-bit mask. */
static __always_inline __u32 vc5_first(__u64 m)
{
	__u64 low = m & -m;

	return vc5_nz(low & 0xa) | vc5_nz(low & 0xc) << 1;
}

/* What a scan of a set found: the ways holding the key, the free ways
 * (bit i for way i), and the least recently seen way and its age. */
struct vc5_scan {
	__u64 match, free, oldest, age;
};

/* The key's words as a way stores them; the last word's low 32 bits are
 * the ports. */
struct vc5_kw {
	__u64 w[5];
};

static __always_inline void vc5_kw4(const struct vc5_flow4 *k, struct vc5_kw *kw)
{
	kw->w[0] = (__u64)k->saddr | (__u64)k->daddr << 32;
	kw->w[1] = (__u64)k->sport | (__u64)k->dport << 16;
}

static __always_inline void vc5_kw6(const struct vc5_flow6 *k, struct vc5_kw *kw)
{
	const __u32 *a = (const __u32 *)k->saddr;

	kw->w[0] = (__u64)a[0] | (__u64)a[1] << 32;
	kw->w[1] = (__u64)a[2] | (__u64)a[3] << 32;
	kw->w[2] = (__u64)a[4] | (__u64)a[5] << 32;
	kw->w[3] = (__u64)a[6] | (__u64)a[7] << 32;
	kw->w[4] = (__u64)k->sport | (__u64)k->dport << 16;
}

/* Scans the ways of a set of n-word ways (2: IPv4, 5: IPv6). The oldest
 * way is a running maximum (the first of equals), kept in registers. */
static __always_inline void vc5_scan(const __u64 *set, int n, const struct vc5_kw *kw,
				     __u16 now, struct vc5_scan *r)
{
	__u64 match = 0, free = 0, oldest = 0, age = 0;

#pragma unroll
	for (int i = 0; i < VC5_WAYS; i++) {
		const __u64 *w = set + i * n;
		__u64 last = w[n - 1], diff = (last ^ kw->w[n - 1]) & 0xffffffff;
		__u64 used = vc5_nz((last >> 32) & 0xffff);
		__u64 a = (__u16)(now - (__u16)(last >> 48)), older;

#pragma unroll
		for (int j = 0; j < n - 1; j++)
			diff |= w[j] ^ kw->w[j];
		match |= ((1 - vc5_nz(diff)) & used) << i;
		free |= (1 - used) << i;
		older = vc5_lt(age, a);
		age = vc5_pick(age, a, older);
		oldest = vc5_pick(oldest, i, older);
	}
	r->match = match;
	r->free = free;
	r->oldest = oldest;
	r->age = age;
}

/* Ways of a 4-bit mask. */
static __always_inline __u64 vc5_ways(__u64 m)
{
	return (m & 1) + (m >> 1 & 1) + (m >> 2 & 1) + (m >> 3 & 1);
}

/* Where the flow's entry is: its set's index times 4 plus its way, or -1.
 * Both sets are read without waiting on each other (no branch between
 * their loads), so their cache misses overlap. (A location, not a
 * pointer: vc5.c calls this from a global function, which the verifier
 * checks once, and those return scalars only.) */
#define VC5_FIND(fam, words, k, h, udp, maskidx)                                \
	({                                                                     \
		__u32 _mask = vc5_flow_mask[maskidx];                          \
		__u32 _i1 = vc5_set_index(h, 0, _mask), _i2 = vc5_set_index(h, 1, _mask); \
		struct vc5_set##fam *_s1 = vc5_set##fam(udp, _i1);             \
		struct vc5_set##fam *_s2 = vc5_set##fam(udp, _i2);             \
		struct vc5_scan _r1, _r2;                                      \
		struct vc5_kw _kw;                                             \
		int _loc = -1;                                                 \
		if (_s1 && _s2) {                                              \
			vc5_kw##fam(k, &_kw);                                  \
			vc5_scan((const __u64 *)_s1, words, &_kw, 0, &_r1);    \
			vc5_scan((const __u64 *)_s2, words, &_kw, 0, &_r2);    \
			if (_r1.match)                                         \
				_loc = (int)(_i1 << 2 | vc5_first(_r1.match)); \
			else if (_r2.match)                                    \
				_loc = (int)(_i2 << 2 | vc5_first(_r2.match)); \
		}                                                              \
		_loc;                                                          \
	})

static __always_inline int vc5_find4(const struct vc5_flow4 *k, __u32 h, int udp)
{
	return VC5_FIND(4, 2, k, h, udp, udp ? 1 : 0);
}

static __always_inline int vc5_find6(const struct vc5_flow6 *k, __u32 h, int udp)
{
	return VC5_FIND(6, 5, k, h, udp, udp ? 3 : 2);
}

/* The value of the way at a location vc5_find4/6 returned (its set is in
 * the cache by then). */
static __always_inline struct vc5_fval *vc5_at4(int udp, int loc)
{
	struct vc5_set4 *s;

	if (loc < 0)
		return NULL;
	s = vc5_set4(udp, (__u32)loc >> 2);
	if (!s)
		return NULL;
	asm volatile("" : "+r"(s)); /* the offset only after the NULL check */
	return &s->way[loc & (VC5_WAYS - 1)].v;
}

static __always_inline struct vc5_fval *vc5_at6(int udp, int loc)
{
	struct vc5_set6 *s;

	if (loc < 0)
		return NULL;
	s = vc5_set6(udp, (__u32)loc >> 2);
	if (!s)
		return NULL;
	asm volatile("" : "+r"(s)); /* the offset only after the NULL check */
	return &s->way[loc & (VC5_WAYS - 1)].v;
}

/* Which of a flow's two scanned sets an insert writes (1: the second) and
 * which way: the flow's own entry (first set first); else a free way of
 * the set with more free ways (the first on a tie): placing each flow in
 * the emptier of two sets keeps the fullest sets far below full at any
 * load short of the table's size; else the least recently seen way of
 * the two, evicted (*evict) if VC5_EVICT_AGE old, else nothing (-1).
 * The insert reads the second set only when the first holds neither the
 * flow nor VC5_WAYS / 2 free ways (r2 is then all zero: no match, none
 * free), so that inserts into a table short of full read one set. */
static __always_inline int vc5_place(const struct vc5_scan *r1, const struct vc5_scan *r2,
				     int *second, int *evict)
{
	if (r1->match)
		return vc5_first(r1->match);
	if (r2->match) {
		*second = 1;
		return vc5_first(r2->match);
	}
	if (r1->free | r2->free) {
		if (vc5_ways(r2->free) > vc5_ways(r1->free)) {
			*second = 1;
			return vc5_first(r2->free);
		}
		return vc5_first(r1->free);
	}
	*second = r2->age > r1->age;
	if ((*second ? r2->age : r1->age) < VC5_EVICT_AGE)
		return -1;
	*evict = 1;
	return *second ? r2->oldest : r1->oldest;
}

/* Pins a flow to backend, stamped now, where vc5_place says. Returns
 * VC5_PUT_PLACED, VC5_PUT_EVICTED or VC5_PUT_FULL (nothing written), with
 * VC5_PUT_READ2 set when it read the second set. One way is written, key
 * words first.
 *
 * deep: the caller's guess that the first set will not do (its last insert
 * read the second). Then the second set's line is loaded before the first
 * is scanned, so that the two misses overlap: into a full table that took
 * an insert from 435-455 ns to 308-312 ns, but it cost a never-used table
 * 20-30 ns (a second miss in flight that it did not need; one run,
 * 2026-12-03). A table fills and empties slowly, so the last insert is a
 * good guess. */
#define VC5_PUT_PLACED 0
#define VC5_PUT_EVICTED 1
#define VC5_PUT_FULL 2
#define VC5_PUT_READ2 4

#define VC5_INSERT(fam, words, k, h, udp, maskidx, backend, now, deep, store_key) \
	({                                                                     \
		__u32 _mask = vc5_flow_mask[maskidx];                          \
		struct vc5_set##fam *_s1 = vc5_set##fam(udp, vc5_set_index(h, 0, _mask)); \
		struct vc5_set##fam *_s2 = NULL;                               \
		struct vc5_scan _r1, _r2 = {};                                 \
		struct vc5_kw _kw;                                             \
		int _second = 0, _evict = 0, _at = -1, _ret = VC5_PUT_FULL;    \
		int _read2 = 0;                                                \
		if (deep) {                                                    \
			_s2 = vc5_set##fam(udp, vc5_set_index(h, 1, _mask));   \
			if (_s2) /* the load itself, not the value */          \
				asm volatile("" :: "r"(*(volatile __u64 *)_s2)); \
		}                                                              \
		if (_s1) {                                                     \
			vc5_kw##fam(k, &_kw);                                  \
			vc5_scan((const __u64 *)_s1, words, &_kw, now, &_r1);  \
			if (_r1.match || vc5_ways(_r1.free) >= VC5_WAYS / 2) { \
				_at = vc5_place(&_r1, &_r2, &_second, &_evict); \
			} else {                                               \
				if (!_s2)                                      \
					_s2 = vc5_set##fam(udp, vc5_set_index(h, 1, _mask)); \
				if (_s2) {                                     \
					_read2 = VC5_PUT_READ2;                \
					vc5_scan((const __u64 *)_s2, words, &_kw, now, &_r2); \
					_at = vc5_place(&_r1, &_r2, &_second, &_evict); \
				}                                              \
			}                                                      \
		}                                                              \
		if (_at >= 0) {                                                \
			__u64 *_w;                                             \
			if (_second && _s2)                                    \
				_s1 = _s2;                                     \
			if (_s1) {                                             \
				_w = (__u64 *)&_s1->way[_at & (VC5_WAYS - 1)]; \
				if (!(_second ? _r2.match : _r1.match))        \
					store_key(_w, &_kw);                   \
				asm volatile("" ::: "memory"); /* key first */ \
				_w[words - 1] = vc5_tail(k->sport, k->dport, backend, now); \
				_ret = _evict;                                 \
			}                                                      \
		}                                                              \
		_ret | _read2;                                                 \
	})

static __always_inline void vc5_key4(__u64 *w, const struct vc5_kw *kw)
{
	w[0] = kw->w[0];
}

static __always_inline void vc5_key6(__u64 *w, const struct vc5_kw *kw)
{
	w[0] = kw->w[0];
	w[1] = kw->w[1];
	w[2] = kw->w[2];
	w[3] = kw->w[3];
}

static __always_inline int vc5_insert4(const struct vc5_flow4 *k, __u32 h, int udp,
				       __u32 backend, __u32 now, int deep)
{
	return VC5_INSERT(4, 2, k, h, udp, udp ? 1 : 0, backend, now, deep, vc5_key4);
}

static __always_inline int vc5_insert6(const struct vc5_flow6 *k, __u32 h, int udp,
				       __u32 backend, __u32 now, int deep)
{
	return VC5_INSERT(6, 5, k, h, udp, udp ? 3 : 2, backend, now, deep, vc5_key6);
}

#endif
