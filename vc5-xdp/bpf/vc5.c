/* SPDX-License-Identifier: (GPL-2.0-only OR BSD-2-Clause) */
/*
 * vc5: the XDP program. Layer-2 Direct Server Return: a packet for a VIP
 * service gets the MAC of one of the service's reals as its destination
 * and leaves by the interface it came in on (XDP_TX). The real holds the
 * VIP on its loopback and answers the client directly.
 *
 * Per packet:
 *   parse Ethernet (+ one 802.1Q/802.1ad tag), IPv4/IPv6, TCP/UDP;
 *   find the service (open-addressed table in an ARRAY map: no helper call);
 *   where the flow's bucket is clean (no moved mark), send it to the
 *   bucket's real: every flow of a clean bucket is pinned there;
 *   else find the flow in its flow table (flowtable.h); if the flow's real is usable, send it
 *   there; else pick a real from the service's lookup table.
 *
 * Policies (README "Data plane policies"):
 * - A clean bucket's TCP packets do not read the flow table (at a
 *   million flows that is a few cache and TLB misses per packet), except
 *   the one packet in VC5_SAMPLE per CPU that refreshes its flow's entry,
 *   or inserts a flow whose handshake this host did not see. UDP has no
 *   handshake: every UDP packet reads the flow table, and the first packet
 *   of a UDP flow inserts it.
 * - A TCP SYN (without ACK) and an RST never create a flow entry: the real
 *   is picked from the lookup table, which gives the same answer for the
 *   handshake's later packets. A SYN marks its flow pending (flow_pending);
 *   the flow's next packet inserts it. Any other TCP packet of a flow the
 *   table does not hold inserts it only when sampled. So a flood of SYNs,
 *   or of ACKs, from spoofed sources costs little flow-table space; and
 *   inserts of new flows are bounded per CPU and tick by
 *   settings.insert_limit (over it the packet is forwarded by the table
 *   and its flow not inserted); and an insert overwrites only a flow idle
 *   for VC5_EVICT_AGE, so no flood of new flows evicts established ones.
 * - IP fragments addressed to a VIP are dropped and counted: only the first
 *   carries ports, so no fragment can be steered consistently.
 * - IPv4 options are allowed; the L4 header is found after them.
 * - IPv6 hop-by-hop, routing and destination-options headers (up to
 *   VC5_V6_EXTS of them) are skipped; more of them make a packet to a VIP
 *   malformed; a fragment header means a fragment.
 * - ICMP "fragmentation needed" / ICMPv6 "packet too big" quoting a VIP
 *   flow go to the real that owns that flow, so path MTU discovery works.
 * - Anything not addressed to a VIP service passes to the kernel untouched.
 * - The frame to a real carries the real's VLAN tag, or none (vlan.h);
 *   without VC5_BACKEND_VLAN a layer-2 frame keeps its tag as it came.
 * - A CPU's flow cache answers only while the flow's real is unchanged
 *   (its epoch) and within one tick of user space's clock, so every CPU
 *   follows the flow table after a real fails or recovers, and a live flow's
 *   entry is stamped ("seen") at least once per tick. A TCP flow idle
 *   past user space's timeout (TCP_IDLE_TIMEOUT, 900 s) and pinned to
 *   another real than its bucket's is deleted by the sweep; its 4-tuple
 *   then follows the table like a new flow.
 * - Flow sync (vc5-flowsync): flows learned from peers sit in peer_* maps
 *   and are consulted only after a miss in the local table, and only in a
 *   moved bucket (tables[s].moved or peer_moved[s]). A local flow always
 *   wins. A peer's flow whose real is usable here (and belongs to this
 *   service) wins over the table: a packet that may create state inserts
 *   it locally (a TAKEOVER), a SYN, RST or ICMP error just follows it.
 *   A peer's flow to an unusable real is ignored: the table decides.
 *   Why a clean bucket needs no peer lookup: vc5-flowsync sets
 *   peer_moved[s] bit k before it writes a peer flow whose real is not
 *   bucket k's, and vc5d sets tables[s].moved bit k before it changes
 *   bucket k's real (its sweep keeps the bit while a live peer flow is
 *   pinned elsewhere); so where both bits are clear every peer flow is
 *   pinned to the bucket's real, the answer the table gives anyway.
 * - While vc5-flowsync runs (sync_status[0].on), each insert (NEW),
 *   re-pin (REPIN), takeover (TAKEOVER) and first flow-table touch of a flow in
 *   a new clock tick (REFRESH) is written to the flow_events ring; an
 *   event the ring has no room for is counted in flow_events_lost, and
 *   the packet is forwarded all the same. The established path served
 *   from a clean bucket or a CPU's cache reports nothing and does no
 *   flow-sync work; a sampled packet's refresh reports REFRESH.
 */
#include <linux/bpf.h>
#include <linux/if_ether.h>
#include <linux/in.h>
#include <linux/ip.h>
#include <linux/ipv6.h>
#include <linux/tcp.h>
#include <linux/udp.h>
#include <bpf/bpf_helpers.h>
#include <bpf/bpf_endian.h>

#include "consts.h"
#include "shared.h"
#include "maps.h"
#include "hash.h"
#include "flowtable.h"

#define VC5_V6_EXTS 3

/* ICMP and ICMPv6 share this header layout; linux/icmp.h drags in libc. */
struct vc5_icmphdr {
	__u8 type;
	__u8 code;
	__u16 csum;
	__u32 rest; /* unused / next-hop MTU / MTU */
};
#define VC5_ICMP_DEST_UNREACH 3
#define VC5_ICMP_FRAG_NEEDED 4
#define VC5_ICMPV6_PKT_TOOBIG 2

#ifndef ETH_P_8021AD
#define ETH_P_8021AD 0x88A8
#endif

/* What the parsers hand to the forwarding step. The service key is built
 * in place, 8-byte aligned, so it can be compared as words. */
struct vc5_pkt {
	struct vc5_svc_key svc __attribute__((aligned(8)));
	union {
		struct vc5_flow4 f4;
		struct vc5_flow6 f6;
	};
	__u32 sfold; /* folds of the flow's client and VIP addresses */
	__u32 dfold;
	__u8 v6;
	__u8 no_insert; /* SYN, RST or an ICMP error: never creates a flow */
	__u8 syn;       /* a SYN (without ACK or RST): marks its flow pending */
	__u8 icmp;      /* an ICMP error quoting the flow */
	/* Where the packet is, for a tunnel (tunnel.h): */
	__u8 l3off;   /* bytes of Ethernet header and tag before the IP header */
	__u8 l4proto; /* the IP header's own protocol (ICMP for an error) */
	__u8 df;      /* IPv4: Don't Fragment set */
	__u16 ip_hl;  /* IP header bytes, IPv6 extension headers included */
	__u16 ip_len; /* the IP header's length of the packet */
};

static __always_inline int vc5_count(__u32 reason, __u64 bytes, int verdict)
{
	struct vc5_counter *c = bpf_map_lookup_elem(&stats, &reason);

	if (c) {
		c->packets++;
		c->bytes += bytes;
	}
	return verdict;
}

/* Finds the slot of a service key, or NULL. The key is 20 bytes: compared
 * as two 64-bit and one 32-bit word. *now and *limit get settings.clock and
 * settings.insert_limit, which the caller would otherwise load again. */
static __always_inline struct vc5_svc_slot *vc5_find(const struct vc5_svc_key *k,
						     __u32 fold, __u32 *now, __u32 *limit)
{
	const __u64 *kw = (const __u64 *)k;
	struct vc5_settings *s;
	__u32 zero = 0, half, h;

	s = bpf_map_lookup_elem(&settings, &zero);
	if (!s)
		return NULL;
	half = s->active & 1;
	*now = s->clock;
	*limit = s->insert_limit;
	h = vc5_slot_hash(fold, k->port, k->proto, half ? s->seed[1] : s->seed[0]);

#pragma unroll
	for (int i = 0; i < VC5_PROBES; i++) {
		__u32 idx = (half << VC5_SLOT_BITS) | ((h + i) & VC5_SLOT_MASK);
		struct vc5_svc_slot *slot = bpf_map_lookup_elem(&svc_slots, &idx);
		const __u64 *sw;

		if (!slot || !slot->vip)
			return NULL;
		sw = (const __u64 *)&slot->key;
		if (sw[0] == kw[0] && sw[1] == kw[1] &&
		    *(const __u32 *)&sw[2] == *(const __u32 *)&kw[2])
			return slot;
	}
	return NULL;
}

/* Is this address a VIP at all (its marker entry: port 0, proto 0)? Only
 * asked on the rare paths: fragments and malformed headers. */
static __always_inline int vc5_is_vip(const struct vc5_pkt *p)
{
	struct vc5_svc_key k __attribute__((aligned(8))) = {};
	__u32 clock, limit;

	__builtin_memcpy(k.addr, p->svc.addr, 16);
	return vc5_find(&k, p->dfold, &clock, &limit) != NULL;
}

static __always_inline int vc5_not_service(const struct vc5_pkt *p,
					   __u32 reason_if_vip, __u64 bytes)
{
	if (vc5_is_vip(p))
		return vc5_count(reason_if_vip, bytes, XDP_DROP);
	return vc5_count(VC5_PASS_NOT_VIP, bytes, XDP_PASS);
}

static __always_inline __u32 vc5_hash(const struct vc5_pkt *p)
{
	if (p->v6)
		return vc5_flow_hash(p->sfold, p->dfold, p->f6.sport, p->f6.dport,
				     p->svc.proto);
	return vc5_flow_hash(p->sfold, p->dfold, p->f4.sport, p->f4.dport,
			     p->svc.proto);
}

static __always_inline int vc5_moved(const struct vc5_table *t, __u32 k)
{
	return (t->moved[k >> 6] >> (k & 63)) & 1;
}

/* The flow-table operations are global functions: the verifier checks
 * each once, on its own, instead of at every call site in every state the
 * caller reaches (inlined, or as static calls, they took it past its
 * million-instruction budget). A call costs a few ns, paid only on the
 * paths that touch the flow table. Global functions return scalars: the
 * lookup returns where the entry is (vc5_find4), and vc5_flow_at turns
 * that into a pointer with one more (inlined, cached) array lookup. */
__noinline int vc5_flow_find(const struct vc5_pkt *p, __u32 h)
{
	int udp;

	if (!p)
		return -1;
	udp = p->svc.proto != IPPROTO_TCP;
	if (p->v6)
		return vc5_find6(&p->f6, h, udp);
	return vc5_find4(&p->f4, h, udp);
}

/* Inserts the flow: VC5_PUT_PLACED, _EVICTED or _FULL, with VC5_PUT_READ2
 * if it read the second set (deep: load that set early). */
__noinline int vc5_flow_put(const struct vc5_pkt *p, __u32 h, __u32 backend, __u32 now,
			    int deep)
{
	int udp;

	if (!p)
		return VC5_PUT_FULL;
	udp = p->svc.proto != IPPROTO_TCP;
	if (p->v6)
		return vc5_insert6(&p->f6, h, udp, backend, now, deep);
	return vc5_insert4(&p->f4, h, udp, backend, now, deep);
}

static __always_inline struct vc5_fval *vc5_flow_lookup(const struct vc5_pkt *p, __u32 h)
{
	int loc = vc5_flow_find(p, h), udp = p->svc.proto != IPPROTO_TCP;

	if (p->v6)
		return vc5_at6(udp, loc);
	return vc5_at4(udp, loc);
}

/* Inserts the flow, counting evictions and refusals; 1 when written. */
static __always_inline int vc5_flow_insert(const struct vc5_pkt *p, __u32 h,
					   __u32 backend, __u32 now,
					   struct vc5_cpu_state *cpu)
{
	int r = vc5_flow_put(p, h, backend, now, cpu && cpu->deep);

	if (cpu)
		cpu->deep = !!(r & VC5_PUT_READ2);
	r &= ~VC5_PUT_READ2;
	if (cpu && r == VC5_PUT_EVICTED)
		cpu->evicted++;
	else if (cpu && r == VC5_PUT_FULL)
		cpu->full++;
	return r != VC5_PUT_FULL;
}

#ifndef VC5_NO_FLOWSYNC
/* A flow learned from a peer by vc5-flowsync, or NULL. Asked only after a
 * miss in the local table in a moved bucket: in a clean bucket any peer's
 * flow is pinned to the bucket's real, which the table gives anyway. */
static __always_inline struct vc5_flow *vc5_peer_lookup(const struct vc5_pkt *p)
{
	if (p->v6) {
		if (p->svc.proto == IPPROTO_TCP)
			return bpf_map_lookup_elem(&peer_tcp6, &p->f6);
		return bpf_map_lookup_elem(&peer_udp6, &p->f6);
	}
	if (p->svc.proto == IPPROTO_TCP)
		return bpf_map_lookup_elem(&peer_tcp4, &p->f4);
	return bpf_map_lookup_elem(&peer_udp4, &p->f4);
}

/* A ring-buffer record of a flow event: the event and the ring's 8-byte
 * header, rounded up to 8 bytes. */
#define VC5_EVENT_RECORD ((sizeof(struct vc5_flow_event) + 8 + 7) & ~7ul)

/* Wake-ups of the ring's reader. 0: the ring's default, adaptive (wake
 * the reader whenever it had caught up, so an idle ring is read at once).
 * A reader that keeps up is then woken for every event, and each wake-up
 * is an irq_work on this CPU plus an IPI to the reader's: measured with
 * vc5-bench on this project's VMs, an inserting packet costs some 3 us
 * with sync on instead of 0.6-0.9 us. N > 0 (vc5's choice, 256): only the
 * event that makes the unread data cross N records wakes the reader (one
 * wake-up per N events on a busy ring); vc5-flowsync also drains the ring
 * every RING_POLL (2 ms), so a quiet ring's events wait no longer. */
#ifndef VC5_EVENT_WAKE
#define VC5_EVENT_WAKE 256
#endif

/* Tells vc5-flowsync about a flow, when it runs (see VC5_EVENT_WAKE). */
static __always_inline void vc5_report(const struct vc5_pkt *p, __u32 backend, __u8 kind)
{
	struct vc5_sync_status *st;
	struct vc5_flow_event *e;
	__u32 zero = 0;

	st = bpf_map_lookup_elem(&sync_status, &zero);
	if (!st || !st->on)
		return;
	e = bpf_ringbuf_reserve(&flow_events, sizeof(*e), 0);
	if (!e) {
		__u64 *lost = bpf_map_lookup_elem(&flow_events_lost, &zero);

		if (lost)
			(*lost)++;
		return;
	}
	e->kind = kind;
	e->v6 = p->v6;
	e->proto = p->svc.proto;
	e->_pad = 0;
	e->backend = backend;
	if (p->v6) {
		__builtin_memcpy(e->key, &p->f6, sizeof(p->f6));
	} else {
		__builtin_memcpy(e->key, &p->f4, sizeof(p->f4));
		__builtin_memset(e->key + sizeof(p->f4), 0, sizeof(e->key) - sizeof(p->f4));
	}
#if VC5_EVENT_WAKE
	/* Unread bytes, ours included (reserved). Two CPUs reserving at once
	 * may both miss the crossing: the reader's timer covers that. */
	__u64 avail = bpf_ringbuf_query(&flow_events, BPF_RB_AVAIL_DATA);

	bpf_ringbuf_submit(e, avail >= VC5_EVENT_WAKE * VC5_EVENT_RECORD &&
				      avail < (VC5_EVENT_WAKE + 1) * VC5_EVENT_RECORD ?
			      BPF_RB_FORCE_WAKEUP :
			      BPF_RB_NO_WAKEUP);
#else
	bpf_ringbuf_submit(e, 0);
#endif
}

/* Is bucket k moved for the peers' flows (peer_moved[s])? */
static __always_inline int vc5_peer_moved(__u32 s, __u32 k)
{
	struct vc5_peer_moved *pm = bpf_map_lookup_elem(&peer_moved, &s);

	return pm && ((pm->bits[k >> 6] >> (k & 63)) & 1);
}
#else
#define vc5_peer_lookup(p) ((struct vc5_flow *)0)
#define vc5_report(p, backend, kind) do { } while (0)
#define vc5_peer_moved(s, k) 0
#endif

/* What a CPU's cache entry says about a flow. */
struct vc5_cached {
	__u32 backend;
	__u32 clock;
	__u16 epoch;
	__u16 hits;
};

/* The CPU's cache entry for this flow's hash, copied to *c (its hit count
 * bumped) when the entry holds this flow. */
static __always_inline int vc5_cache_get(const struct vc5_pkt *p, __u32 h,
					 struct vc5_cached *out)
{
	__u32 ci = h >> (32 - VC5_CACHE_BITS);

	if (p->v6) {
		struct vc5_cache6 *c = bpf_map_lookup_elem(&flow_cache6, &ci);

		if (!c || c->proto != p->svc.proto ||
		    c->key.sport != p->f6.sport || c->key.dport != p->f6.dport ||
		    __builtin_memcmp(c->key.saddr, p->f6.saddr, 16) ||
		    __builtin_memcmp(c->key.daddr, p->f6.daddr, 16))
			return 0;
		out->hits = ++c->hits;
		out->backend = c->backend;
		out->epoch = c->epoch;
		out->clock = c->clock;
		return 1;
	}
	struct vc5_cache4 *c = bpf_map_lookup_elem(&flow_cache4, &ci);

	if (!c || c->proto != p->svc.proto || c->key.saddr != p->f4.saddr ||
	    c->key.daddr != p->f4.daddr || c->key.sport != p->f4.sport ||
	    c->key.dport != p->f4.dport)
		return 0;
	out->hits = ++c->hits;
	out->backend = c->backend;
	out->epoch = c->epoch;
	out->clock = c->clock;
	return 1;
}

static __always_inline void vc5_cache_put(const struct vc5_pkt *p, __u32 h,
					  __u32 backend, __u16 epoch, __u32 now)
{
	__u32 ci = h >> (32 - VC5_CACHE_BITS);

	if (p->v6) {
		struct vc5_cache6 *c = bpf_map_lookup_elem(&flow_cache6, &ci);

		if (c) {
			c->key = p->f6;
			c->proto = p->svc.proto;
			c->hits = 0;
			c->backend = backend;
			c->epoch = epoch;
			c->clock = now;
		}
		return;
	}
	struct vc5_cache4 *c = bpf_map_lookup_elem(&flow_cache4, &ci);

	if (c) {
		c->key = p->f4;
		c->proto = p->svc.proto;
		c->hits = 0;
		c->backend = backend;
		c->epoch = epoch;
		c->clock = now;
	}
}

static __always_inline int vc5_usable(struct vc5_backend *b)
{
	return b && (b->flags & VC5_BACKEND_USABLE);
}

/* The word of flow_pending that holds this flow's bit (the bits of its
 * hash above the bucket's), and the bit. */
static __always_inline __u64 *vc5_pending(__u32 h, __u64 *bit)
{
	__u32 i = h >> (32 - VC5_PENDING_BITS);
	__u32 w = i >> 6;

	*bit = 1ull << (i & 63);
	return bpf_map_lookup_elem(&flow_pending, &w);
}

/* A SYN: its flow's next packet is to insert it. Written only when the bit
 * is clear, so a SYN flood on one flow dirties no cache line. */
static __always_inline void vc5_pending_mark(__u32 h)
{
	__u64 bit, *w = vc5_pending(h, &bit);

	if (w && !(*w & bit))
		__sync_fetch_and_or(w, bit);
}

/* Was the flow's SYN seen since its last packet? Clears the mark.
 * VC5_BENCH_PENDING (a benchmark's build only): always, as if it was. */
static __always_inline int vc5_pending_take(__u32 h)
{
	__u64 bit, *w = vc5_pending(h, &bit);

#ifdef VC5_BENCH_PENDING
	return 1;
#endif
	if (!w || !(*w & bit))
		return 0;
	__sync_fetch_and_and(w, ~bit);
	return 1;
}

/* May this CPU insert one more flow in this second (settings.insert_limit
 * per window of 2^30 ns)? A refusal is counted; the packet is forwarded
 * all the same. The window comes from the coarse clock, read only here on
 * the inserting path: settings.clock moves only every sweep interval. */
static __always_inline int vc5_budget(struct vc5_cpu_state *cpu, __u32 limit)
{
	__u32 window;

	if (!cpu || !limit)
		return 1;
	window = (__u32)(bpf_ktime_get_coarse_ns() >> 30);
	if (cpu->clock != window) {
		cpu->clock = window;
		cpu->inserts = 0;
	}
	if (cpu->inserts >= limit) {
		cpu->refused++;
		return 0;
	}
	cpu->inserts++;
	return 1;
}

static __always_inline void vc5_mark_moved(struct vc5_table *t, __u32 k)
{
	__sync_fetch_and_or(&t->moved[k >> 6], 1ull << (k & 63));
}

#include "vlan.h"
#include "tunnel.h"
#include "probe.h"

/* Gives the frame b's way to its real: a tunnel (tunnel.h), a VLAN tag
 * (vlan.h), or new MACs. -1 when the frame is ready to leave, else the
 * verdict (answered or dropped, and counted). */
static __always_inline int vc5_deliver(struct xdp_md *ctx, struct ethhdr *eth,
				       const struct vc5_pkt *p, const struct vc5_backend *b,
				       __u32 h, __u64 bytes)
{
	if (b->tunnel)
		return vc5_encap(ctx, p, b, h, bytes);
	if (b->flags & VC5_BACKEND_VLAN)
		return vc5_retag(ctx, p, b, bytes);
	__builtin_memcpy(eth->h_dest, b->mac, ETH_ALEN);
	__builtin_memcpy(eth->h_source, b->src_mac, ETH_ALEN);
	return -1;
}

/* Steers a packet of a service. A bucket is clean when neither its moved
 * mark nor its peer_moved mark is set: then every flow of the bucket, ours
 * and the peers', is pinned to the bucket's real, and the table alone
 * decides, without a flow-table lookup (at a million flows, a few cache
 * and TLB misses). The flow table is touched there only by the packets
 * that must keep it right for the day the bucket moves: the first packet
 * after a flow's SYN inserts the flow (flow_pending), and one packet in
 * VC5_SAMPLE per CPU looks its flow up, refreshing its "seen" stamp or
 * inserting a flow whose handshake this host did not see. In a moved
 * bucket every packet looks its flow up; a flow it does not find is
 * inserted by the same two kinds of packet. UDP, which has no SYN, takes
 * the flow-table path in every bucket, and its first packet inserts the
 * flow. Every insert of a new flow counts against the CPU's
 * settings.insert_limit per second. */
static __always_inline int vc5_forward(struct xdp_md *ctx, struct ethhdr *eth,
				       const struct vc5_pkt *p, __u64 bytes)
{
	struct vc5_cpu_state *cpu = NULL;
	struct vc5_cached c = {};
	struct vc5_backend *b = NULL;
	struct vc5_backend_stats *bs;
	struct vc5_svc_slot *svc;
	struct vc5_table *t;
	struct vc5_fval *f;
	__u32 s, h, k, bi = 0, fresh = 0, now = 0, limit = 0, zero = 0;
	int cached = 0, moved, pending = 0, sampled = 0;

	svc = vc5_find(&p->svc, p->dfold, &now, &limit);

	if (!svc || !svc->service) {
		/* Not a VIP: it may be a real's answer to a probe (probe.h). */
#ifndef VC5_NO_PROBES
		int v = svc ? -1 : vc5_probe_reply(ctx, p, bytes);
#else
		int v = -1; /* the benchmark's "before probes" build */
#endif

		if (v >= 0)
			return v;
		return vc5_count(VC5_PASS_NOT_VIP, bytes, XDP_PASS);
	}
	s = svc->service;
	t = bpf_map_lookup_elem(&tables, &s);
	if (!t)
		return vc5_count(VC5_DROP_NO_BACKEND, bytes, XDP_DROP);
	h = vc5_hash(p);
	k = h & VC5_TABLE_MASK;
	moved = vc5_moved(t, k) || vc5_peer_moved(s, k);

	if (p->syn)
		vc5_pending_mark(h);
	if (!p->no_insert) {
		/* Only TCP has SYNs: a UDP packet leaves a TCP flow's mark. */
		pending = p->svc.proto == IPPROTO_TCP && vc5_pending_take(h);
		cpu = bpf_map_lookup_elem(&cpu_state, &zero);
		sampled = cpu && !(++cpu->sample & (VC5_SAMPLE - 1));
	}
	/* Clean: the table decides for SYN, RST and ICMP errors, which create
	 * no state, and for TCP. UDP has no SYN to say a flow is new, so every
	 * UDP packet reads the flow table below, and an unknown UDP flow is
	 * inserted at once: no UDP flow moves when its bucket does. */
	if (!moved && (p->no_insert || p->svc.proto == IPPROTO_TCP)) {
		bi = t->backend[k];
		b = bpf_map_lookup_elem(&backends, &bi);
		if (!bi || !vc5_usable(b))
			goto drop;
		if (p->no_insert || !(pending || sampled))
			goto emit;
		/* After its SYN came this way, any entry of this 4-tuple is
		 * pinned to this real too: write without looking. */
		f = pending ? NULL : vc5_flow_lookup(p, h);
		if (!f) {
			if (vc5_budget(cpu, limit) && vc5_flow_insert(p, h, bi, now, cpu)) {
				vc5_report(p, bi, VC5_EVENT_NEW);
				fresh = 1;
			}
			goto emit;
		}
		if (f->backend == bi) {
			if (f->seen != (__u16)now) {
				f->seen = now;
				vc5_report(p, bi, VC5_EVENT_REFRESH);
			}
			goto emit;
		}
		/* Pinned elsewhere in a clean bucket: another CPU between its
		 * insert and its mark, or a mark lost. Mark the bucket, and
		 * follow the flow below. */
		vc5_mark_moved(t, k);
		moved = 1;
	}

	/* Fast path: this CPU has seen the flow in the flow table recently, and
	 * neither the flow's real nor the clock has changed since: a real's
	 * change (a failure, say) may have let another CPU re-pin the flow,
	 * and a clock tick is when the entry's "seen" stamp is due. */
	if (vc5_cache_get(p, h, &c)) {
		bi = c.backend;
		b = bpf_map_lookup_elem(&backends, &bi);
		cached = vc5_usable(b) && b->epoch == c.epoch;
		if (cached && (((c.hits & VC5_REFRESH) && c.clock == now) || p->icmp))
			goto emit;
	}

	f = vc5_flow_lookup(p, h);
	if (f) {
		bi = f->backend;
		b = bpf_map_lookup_elem(&backends, &bi);
		if (vc5_usable(b)) {
			/* Written once per tick at most: the entry's cache
			 * line is shared by every CPU the flow reaches. */
			if (f->seen != (__u16)now && !p->icmp) {
				f->seen = now;
				vc5_report(p, bi, VC5_EVENT_REFRESH);
			}
			goto cache;
		}
	} else if (cached && !p->no_insert && now - c.clock < VC5_CACHE_TRUST) {
		/* The table lost a flow the cache still serves, its real has
		 * not changed since the cache learnt it (so no CPU can have
		 * re-pinned it) and the entry is recent: restore it with the
		 * same real rather than letting the flow move, the bucket
		 * marked first if that is not the bucket's real. Not counted
		 * against the insert limit: the flow is not new. */
		if (bi != t->backend[k])
			vc5_mark_moved(t, k);
		if (vc5_flow_insert(p, h, bi, now, cpu))
			vc5_report(p, bi, VC5_EVENT_NEW);
		goto emit;
	} else if (moved) {
		/* Not ours: a peer's flow, if a peer has one, wins over the
		 * table while its real is usable here, and becomes ours. In a
		 * clean bucket (UDP) every peer's flow agrees with the table. */
		struct vc5_flow *pf = vc5_peer_lookup(p);

		if (pf) {
			__u32 pi = pf->backend;
			struct vc5_backend *pb = bpf_map_lookup_elem(&backends, &pi);

			/* The service check: an index vc5d freed and gave
			 * to another service before vc5-flowsync re-read the
			 * backends must not send this flow to that service. */
			if (vc5_usable(pb) && pb->service == s) {
				bi = pi;
				b = pb;
				if (p->no_insert)
					goto emit; /* SYN/RST/ICMP: follow it, keep no state */
				if (bi != t->backend[k])
					vc5_mark_moved(t, k);
				if (vc5_flow_insert(p, h, bi, now, cpu)) {
					vc5_report(p, bi, VC5_EVENT_TAKEOVER);
					fresh = 1;
				}
				goto cache;
			}
		}
	}

	/* A new flow, or one whose real is no longer usable. */
	bi = t->backend[k];
	b = bpf_map_lookup_elem(&backends, &bi);
	if (!bi || !vc5_usable(b))
		goto drop;
	if (p->icmp)
		goto emit;
	if (f) {
		/* Re-pin a flow whose real failed: one 4-byte store. */
		*(__u32 *)f = (bi & 0xffff) | now << 16;
		vc5_report(p, bi, VC5_EVENT_REPIN);
	} else if (p->no_insert ||
		   !(pending || sampled || p->svc.proto == IPPROTO_UDP) ||
		   !vc5_budget(cpu, limit)) {
		/* SYN/RST; or a TCP packet that does not insert; or over the
		 * limit: the table's answer, and no state, not even in the
		 * cache (which would restore a flow the table never had). */
		goto emit;
	} else if (vc5_flow_insert(p, h, bi, now, cpu)) {
		vc5_report(p, bi, VC5_EVENT_NEW);
	} else {
		goto emit; /* both sets full of live flows: no state */
	}
	fresh = 1;

cache:
	if (!p->icmp && b)
		vc5_cache_put(p, h, bi, b->epoch, now);
emit:
	if (!b)
		return XDP_ABORTED; /* unreachable; keeps the verifier sure */
	{
		int v = vc5_deliver(ctx, eth, p, b, h, bytes);

		if (v >= 0)
			return v; /* answered or dropped, and counted */
	}
	bs = bpf_map_lookup_elem(&backend_stats, &bi);
	if (bs) {
		bs->packets++;
		bs->bytes += bytes;
		bs->new_flows += fresh;
	}
	if (b->ifindex && b->ifindex != ctx->ingress_ifindex)
		return vc5_count(VC5_REDIRECT, bytes, bpf_redirect(b->ifindex, 0));
	return vc5_count(p->icmp ? VC5_ICMP_TX : VC5_TX, bytes, XDP_TX);

drop: {
	struct vc5_counter *d = bpf_map_lookup_elem(&service_drops, &s);

	if (d) {
		d->packets++;
		d->bytes += bytes;
	}
	return vc5_count(VC5_DROP_NO_BACKEND, bytes, XDP_DROP);
}
}

/* Fills the flow part of p from a TCP/UDP header at l4 (client to VIP). */
static __always_inline int vc5_ports(struct vc5_pkt *p, void *l4, void *end,
				     __u8 proto)
{
	if (proto == IPPROTO_TCP) {
		struct tcphdr *th = l4;

		if ((void *)(th + 1) > end || th->doff < 5)
			return -1;
		p->no_insert = (th->syn && !th->ack) || th->rst;
		p->syn = th->syn && !th->ack && !th->rst;
		if (p->v6) {
			p->f6.sport = th->source;
			p->f6.dport = th->dest;
		} else {
			p->f4.sport = th->source;
			p->f4.dport = th->dest;
		}
		p->svc.port = th->dest;
		return 0;
	}
	struct udphdr *uh = l4;

	if ((void *)(uh + 1) > end)
		return -1;
	if (p->v6) {
		p->f6.sport = uh->source;
		p->f6.dport = uh->dest;
	} else {
		p->f4.sport = uh->source;
		p->f4.dport = uh->dest;
	}
	p->svc.port = uh->dest;
	return 0;
}

static __always_inline void vc5_svc_addr4(struct vc5_pkt *p, __u32 addr)
{
	__u32 *w = (__u32 *)p->svc.addr;

	w[0] = 0;
	w[1] = 0;
	w[2] = VC5_V4_FOLD;
	w[3] = addr;
}

/* ICMP "fragmentation needed" quoting a packet the real sent from the VIP:
 * the quoted header is VIP -> client, so the flow is its reverse. */
static __always_inline int vc5_icmp4(struct xdp_md *ctx, struct ethhdr *eth,
				     struct iphdr *ip, void *l4, void *end,
				     struct vc5_pkt *p, __u64 bytes)
{
	struct vc5_icmphdr *ic = l4;
	struct iphdr *in;
	__u16 *ports;
	__u32 ihl;

	if ((void *)(ic + 1) > end)
		return vc5_count(VC5_PASS_NOT_VIP, bytes, XDP_PASS);
	if (ic->type != VC5_ICMP_DEST_UNREACH || ic->code != VC5_ICMP_FRAG_NEEDED)
		return vc5_count(VC5_PASS_NOT_VIP, bytes, XDP_PASS);
	in = (void *)(ic + 1);
	if ((void *)(in + 1) > end)
		return vc5_count(VC5_PASS_NOT_VIP, bytes, XDP_PASS);
	ihl = in->ihl * 4;
	if (ihl < sizeof(*in) || in->saddr != ip->daddr ||
	    (in->protocol != IPPROTO_TCP && in->protocol != IPPROTO_UDP))
		return vc5_count(VC5_PASS_NOT_VIP, bytes, XDP_PASS);
	ports = (void *)in + ihl;
	if ((void *)(ports + 2) > end)
		return vc5_count(VC5_PASS_NOT_VIP, bytes, XDP_PASS);

	p->icmp = 1;
	p->no_insert = 1;
	p->svc.proto = in->protocol;
	p->svc.port = ports[0];
	vc5_svc_addr4(p, in->saddr);
	p->f4.saddr = in->daddr;
	p->f4.daddr = in->saddr;
	p->f4.sport = ports[1];
	p->f4.dport = ports[0];
	p->sfold = in->daddr ^ VC5_V4_FOLD;
	p->dfold = in->saddr ^ VC5_V4_FOLD;
	return vc5_forward(ctx, eth, p, bytes);
}

static __always_inline int vc5_ipv4(struct xdp_md *ctx, struct ethhdr *eth,
				    void *l3, void *end, __u64 bytes)
{
	struct vc5_pkt p = {};
	struct iphdr *ip = l3;
	__u32 ihl;
	void *l4;

	if ((void *)(ip + 1) > end)
		return vc5_count(VC5_PASS_SHORT, bytes, XDP_PASS);

	vc5_svc_addr4(&p, ip->daddr);
	p.dfold = ip->daddr ^ VC5_V4_FOLD;
	p.l3off = l3 - (void *)eth;
	p.l4proto = ip->protocol;
	p.df = !!(ip->frag_off & bpf_htons(0x4000));
	p.ip_len = bpf_ntohs(ip->tot_len);

	if (ip->frag_off & bpf_htons(0x3fff)) /* MF or an offset */
		return vc5_not_service(&p, VC5_DROP_FRAGMENT, bytes);
	ihl = ip->ihl * 4;
	if (ihl < sizeof(*ip))
		return vc5_not_service(&p, VC5_DROP_MALFORMED, bytes);
	l4 = l3 + ihl;
	p.ip_hl = ihl;

	if (ip->protocol == IPPROTO_ICMP)
		return vc5_icmp4(ctx, eth, ip, l4, end, &p, bytes);
	if (ip->protocol != IPPROTO_TCP && ip->protocol != IPPROTO_UDP)
		return vc5_count(VC5_PASS_NOT_VIP, bytes, XDP_PASS);

	p.svc.proto = ip->protocol;
	if (vc5_ports(&p, l4, end, ip->protocol))
		return vc5_not_service(&p, VC5_DROP_MALFORMED, bytes);
	p.f4.saddr = ip->saddr;
	p.f4.daddr = ip->daddr;
	p.sfold = ip->saddr ^ VC5_V4_FOLD;
	return vc5_forward(ctx, eth, &p, bytes);
}

/* ICMPv6 "packet too big", the IPv6 twin of vc5_icmp4. */
static __always_inline int vc5_icmp6(struct xdp_md *ctx, struct ethhdr *eth,
				     struct ipv6hdr *ip, void *l4, void *end,
				     struct vc5_pkt *p, __u64 bytes)
{
	struct vc5_icmphdr *ic = l4;
	struct ipv6hdr *in;
	__u16 *ports;

	if ((void *)(ic + 1) > end || ic->type != VC5_ICMPV6_PKT_TOOBIG)
		return vc5_count(VC5_PASS_NOT_VIP, bytes, XDP_PASS);
	in = (void *)(ic + 1);
	if ((void *)(in + 1) > end)
		return vc5_count(VC5_PASS_NOT_VIP, bytes, XDP_PASS);
	if (in->nexthdr != IPPROTO_TCP && in->nexthdr != IPPROTO_UDP)
		return vc5_count(VC5_PASS_NOT_VIP, bytes, XDP_PASS);
	if (__builtin_memcmp(&in->saddr, &ip->daddr, 16))
		return vc5_count(VC5_PASS_NOT_VIP, bytes, XDP_PASS);
	ports = (void *)(in + 1);
	if ((void *)(ports + 2) > end)
		return vc5_count(VC5_PASS_NOT_VIP, bytes, XDP_PASS);

	p->icmp = 1;
	p->no_insert = 1;
	p->svc.proto = in->nexthdr;
	p->svc.port = ports[0];
	__builtin_memcpy(p->svc.addr, &in->saddr, 16);
	__builtin_memcpy(p->f6.saddr, &in->daddr, 16);
	__builtin_memcpy(p->f6.daddr, &in->saddr, 16);
	p->f6.sport = ports[1];
	p->f6.dport = ports[0];
	p->sfold = vc5_fold6((const __u32 *)p->f6.saddr);
	p->dfold = vc5_fold6((const __u32 *)p->f6.daddr);
	return vc5_forward(ctx, eth, p, bytes);
}

static __always_inline int vc5_ipv6(struct xdp_md *ctx, struct ethhdr *eth,
				    void *l3, void *end, __u64 bytes)
{
	struct vc5_pkt p = { .v6 = 1 };
	struct ipv6hdr *ip = l3;
	void *l4 = ip + 1;
	__u8 nh;

	if ((void *)(ip + 1) > end)
		return vc5_count(VC5_PASS_SHORT, bytes, XDP_PASS);

	__builtin_memcpy(p.svc.addr, &ip->daddr, 16);
	p.dfold = vc5_fold6((const __u32 *)p.svc.addr);
	p.l3off = l3 - (void *)eth;
	p.ip_len = sizeof(*ip) + bpf_ntohs(ip->payload_len);
	nh = ip->nexthdr;

#pragma unroll
	for (int i = 0; i < VC5_V6_EXTS; i++) {
		struct ipv6_opt_hdr *eh = l4;

		if (nh != IPPROTO_HOPOPTS && nh != IPPROTO_ROUTING &&
		    nh != IPPROTO_DSTOPTS)
			break;
		if ((void *)(eh + 1) > end)
			return vc5_not_service(&p, VC5_DROP_MALFORMED, bytes);
		nh = eh->nexthdr;
		l4 += (eh->hdrlen + 1) * 8;
	}
	/* More of them than we skip: for a VIP, malformed rather than handed
	 * to this host's stack, which would route it back out. */
	if (nh == IPPROTO_HOPOPTS || nh == IPPROTO_ROUTING ||
	    nh == IPPROTO_DSTOPTS)
		return vc5_not_service(&p, VC5_DROP_MALFORMED, bytes);
	if (nh == IPPROTO_FRAGMENT)
		return vc5_not_service(&p, VC5_DROP_FRAGMENT, bytes);
	p.l4proto = nh;
	p.ip_hl = l4 - l3;
	if (nh == IPPROTO_ICMPV6)
		return vc5_icmp6(ctx, eth, ip, l4, end, &p, bytes);
	if (nh != IPPROTO_TCP && nh != IPPROTO_UDP)
		return vc5_count(VC5_PASS_NOT_VIP, bytes, XDP_PASS);

	p.svc.proto = nh;
	if (vc5_ports(&p, l4, end, nh))
		return vc5_not_service(&p, VC5_DROP_MALFORMED, bytes);
	__builtin_memcpy(p.f6.saddr, &ip->saddr, 16);
	__builtin_memcpy(p.f6.daddr, &ip->daddr, 16);
	p.sfold = vc5_fold6((const __u32 *)p.f6.saddr);
	return vc5_forward(ctx, eth, &p, bytes);
}

static __always_inline int vc5_main(struct xdp_md *ctx)
{
	void *data = (void *)(long)ctx->data;
	void *end = (void *)(long)ctx->data_end;
	struct ethhdr *eth = data;
	__u64 bytes = end - data;
	void *l3 = eth + 1;
	__u16 proto;

	if ((void *)(eth + 1) > end)
		return vc5_count(VC5_PASS_SHORT, bytes, XDP_PASS);
	proto = eth->h_proto;
	if (proto == bpf_htons(ETH_P_8021Q) || proto == bpf_htons(ETH_P_8021AD)) {
		__u16 *tag = l3; /* TCI, then the inner EtherType */

		if ((void *)(tag + 2) > end)
			return vc5_count(VC5_PASS_SHORT, bytes, XDP_PASS);
		proto = tag[1];
		l3 = tag + 2;
	}
	if (proto == bpf_htons(ETH_P_IP))
		return vc5_ipv4(ctx, eth, l3, end, bytes);
	if (proto == bpf_htons(ETH_P_IPV6))
		return vc5_ipv6(ctx, eth, l3, end, bytes);
	return vc5_count(VC5_PASS_NOT_IP, bytes, XDP_PASS);
}

SEC("xdp")
int vc5_xdp(struct xdp_md *ctx)
{
	return vc5_main(ctx);
}

/* On the host end of vc5d's probe veth (probe.h): a probe from the
 * namespace to a NAT address leaves as a client's packet to the pair's VIP,
 * by the way to its real. Anything else from the namespace is dropped. */
SEC("xdp")
int vc5_probe(struct xdp_md *ctx)
{
	void *data = (void *)(long)ctx->data;
	void *end = (void *)(long)ctx->data_end;
	__u64 bytes = end - data;
	struct vc5_probe_cfg *cfg;
	struct vc5_pkt p = {};
	struct vc5_probe *pr;
	struct ethhdr *eth;
	__u32 zero = 0, h;
	int v;

	cfg = bpf_map_lookup_elem(&probe_cfg, &zero);
	if (!cfg)
		return XDP_DROP;
	pr = vc5_probe_out(ctx, &p, cfg, bytes);
	if (!pr)
		return XDP_DROP;
	data = (void *)(long)ctx->data;
	end = (void *)(long)ctx->data_end;
	eth = data;
	if ((void *)(eth + 1) > end)
		return XDP_DROP;
	/* Entropy for a FOU/GUE source port: the probe's ports. */
	h = p.v6 ? ((__u32)p.f6.sport << 16 | p.f6.dport) : ((__u32)p.f4.sport << 16 | p.f4.dport);
	h *= 0x9e3779b1;
	v = vc5_deliver(ctx, eth, &p, &pr->way, h, bytes);
	if (v >= 0)
		return v;
	return vc5_probe_count(VC5_PROBE_SENT, bytes,
			       bpf_redirect(pr->way.ifindex ? pr->way.ifindex : cfg->trunk, 0));
}

/* On the namespace end of the probe veth: a program there is what lets
 * the main program redirect replies into the veth in native mode. */
SEC("xdp")
int vc5_pass(struct xdp_md *ctx)
{
	return XDP_PASS;
}

#ifdef VC5_BENCH
/* The benchmark's wrappers, built only into the *_bench.o objects.
 * BPF_PROG_TEST_RUN repeats one frame; these give each repetition another
 * client address before running the real program:
 * - vc5_bench_fresh: a new one each time (10.0.0.0/8 counting up, then
 *   round again), so every repetition is a new flow;
 * - vc5_bench_pick: one of bench_flows[0] flows (11.0.0.0 + i, i below
 *   that count), scattered by a multiplicative hash of a counter, so each
 *   repetition is a random established flow among that many.
 * The frame may be IPv4 or IPv6 (the address's last 32 bits change), with
 * or without one VLAN tag. */
struct {
	__uint(type, BPF_MAP_TYPE_PERCPU_ARRAY);
	__uint(max_entries, 1);
	__type(key, __u32);
	__type(value, __u32);
} bench_seq SEC(".maps");

struct {
	__uint(type, BPF_MAP_TYPE_ARRAY);
	__uint(max_entries, 1);
	__type(key, __u32);
	__type(value, __u32);
} bench_flows SEC(".maps");

/* The client address's last 32 bits in the frame, or NULL. */
static __always_inline __u32 *vc5_bench_src(struct xdp_md *ctx)
{
	void *data = (void *)(long)ctx->data;
	void *end = (void *)(long)ctx->data_end;
	struct ethhdr *eth = data;
	void *l3 = eth + 1;
	__u16 proto;

	if ((void *)(eth + 1) > end)
		return NULL;
	proto = eth->h_proto;
	if (proto == bpf_htons(ETH_P_8021Q)) {
		__u16 *tag = l3;

		if ((void *)(tag + 2) > end)
			return NULL;
		proto = tag[1];
		l3 = tag + 2;
	}
	if (proto == bpf_htons(ETH_P_IP)) {
		struct iphdr *ip = l3;

		if ((void *)(ip + 1) > end)
			return NULL;
		return &ip->saddr;
	}
	if (proto == bpf_htons(ETH_P_IPV6)) {
		struct ipv6hdr *ip = l3;

		if ((void *)(ip + 1) > end)
			return NULL;
		return &ip->saddr.in6_u.u6_addr32[3];
	}
	return NULL;
}

SEC("xdp")
int vc5_bench_fresh(struct xdp_md *ctx)
{
	__u32 zero = 0, *n, *src = vc5_bench_src(ctx);

	n = bpf_map_lookup_elem(&bench_seq, &zero);
	if (!src || !n)
		return XDP_ABORTED;
	*src = bpf_htonl(0x0a000000 | (++*n & 0x00ffffff));
	return vc5_main(ctx);
}

SEC("xdp")
int vc5_bench_pick(struct xdp_md *ctx)
{
	__u32 zero = 0, *n, *flows, i, *src = vc5_bench_src(ctx);

	n = bpf_map_lookup_elem(&bench_seq, &zero);
	flows = bpf_map_lookup_elem(&bench_flows, &zero);
	if (!src || !n || !flows)
		return XDP_ABORTED;
	i = (__u32)(((__u64)(++*n * 0x9e3779b1u) * *flows) >> 32);
	*src = bpf_htonl(0x0b000000 + i);
	return vc5_main(ctx);
}

/* vc5_bench_restore: test_run does not restore the frame between
 * repetitions, so a program that moves its head (a tunnel, a VLAN tag
 * pushed or removed) or rewrites more than the MACs would see its own
 * output the next time. This wrapper puts the frame back first: its head
 * moved to the length user space wrote in bench_frame (the growth or loss
 * is at the front), its first VC5_BENCH_HEAD bytes copied back from there.
 * Its own cost: a map lookup and the copy, plus a move of the head where
 * there is one to undo. */
#define VC5_BENCH_HEAD 64

struct vc5_bench_frame {
	__u32 len; /* the frame's length */
	__u32 _pad;
	__u8 head[VC5_BENCH_HEAD]; /* its first bytes */
};

struct {
	__uint(type, BPF_MAP_TYPE_ARRAY);
	__uint(max_entries, 1);
	__type(key, __u32);
	__type(value, struct vc5_bench_frame);
} bench_frame SEC(".maps");

SEC("xdp")
int vc5_bench_restore(struct xdp_md *ctx)
{
	__u32 zero = 0;
	struct vc5_bench_frame *f = bpf_map_lookup_elem(&bench_frame, &zero);
	void *data = (void *)(long)ctx->data;
	void *end = (void *)(long)ctx->data_end;
	const __u64 *from;
	__u64 *to;
	long d;

	if (!f)
		return XDP_ABORTED;
	d = (long)(end - data) - (long)f->len;
	if (d && bpf_xdp_adjust_head(ctx, (int)d))
		return XDP_ABORTED;
	data = (void *)(long)ctx->data;
	end = (void *)(long)ctx->data_end;
	to = data;
	from = (const __u64 *)f->head;
	if ((void *)(to + VC5_BENCH_HEAD / 8) > end)
		return XDP_ABORTED;
#pragma unroll
	for (int i = 0; i < VC5_BENCH_HEAD / 8; i++)
		to[i] = from[i];
	return vc5_main(ctx);
}
#endif

char LICENSE[] SEC("license") = "Dual BSD/GPL";
