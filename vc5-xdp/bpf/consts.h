/* SPDX-License-Identifier: (GPL-2.0-only OR BSD-2-Clause) */
/*
 * vc5 data plane: constants shared by the XDP program and user space.
 *
 * The Rust side mirrors every value here in vc5-xdp/src/maps.rs; a test
 * compares the structs in shared.h against the object's BTF, and the
 * sizes below are read back from the maps' own definitions at load time.
 */
#ifndef VC5_CONSTS_H
#define VC5_CONSTS_H

/* Service slots: an open-addressed hash table kept in an ARRAY map, because
 * an array lookup is inlined by the verifier (a few ns) where a BPF hash map
 * lookup costs a call and a jhash (tens of ns). Two halves of VC5_SLOTS
 * entries: user space writes the idle half, then flips settings.active, so
 * packets never see a half-written table. */
#define VC5_SLOT_BITS 16
#define VC5_SLOTS (1u << VC5_SLOT_BITS)
#define VC5_SLOT_MASK (VC5_SLOTS - 1)
/* User space guarantees (by choosing the seed) that every key sits within
 * VC5_PROBES slots of its hash, so a miss costs at most this many reads. */
#define VC5_PROBES 8

/* Lookup table of one service: VC5_TABLE_SIZE backend indexes filled by
 * weighted rendezvous hashing in user space. */
#define VC5_TABLE_BITS 12
#define VC5_TABLE_SIZE (1u << VC5_TABLE_BITS)
#define VC5_TABLE_MASK (VC5_TABLE_SIZE - 1)

/* Per-CPU flow caches: entries per CPU, and how often a cache hit also
 * touches the flow's flow-table entry (every VC5_REFRESH+1 hits), so that
 * busy flows served from the cache are never eviction victims. */
#define VC5_CACHE_BITS 14
#define VC5_CACHE_SIZE (1u << VC5_CACHE_BITS)
#define VC5_REFRESH 63
/* Seconds (of settings.clock) for which a CPU's cache entry vouches for
 * its flow when the flow table has lost it: a younger entry's flow was alive, so
 * it is restored with its real; an older one's may be a dead flow that a
 * sweep deleted (user space's TCP idle timeout is longer than this plus
 * a clock tick), whose 4-tuple is free again. */
#define VC5_CACHE_TRUST 300

/* Which packets touch the flow table where a bucket is clean (see
 * vc5_forward): one in VC5_SAMPLE per CPU (a refresh, or the insert of a
 * flow whose handshake this host did not see), and the first packet after
 * a SYN, which a bitmap of VC5_PENDING_BITS bits indexed by the flow hash
 * remembers (128 KiB, shared by the CPUs: a SYN and its ACK need not come
 * in on the same one). */
#ifndef VC5_SAMPLE_BITS
#define VC5_SAMPLE_BITS 6
#endif
#define VC5_SAMPLE (1u << VC5_SAMPLE_BITS)
#define VC5_PENDING_BITS 20
#define VC5_PENDING_WORDS (1u << (VC5_PENDING_BITS - 6))
/* Flows a CPU may insert per second (a window of 2^30 ns of the coarse
 * clock) unless user space sets settings.insert_limit otherwise; 0 there
 * means no bound. */
#define VC5_INSERT_LIMIT 100000

/* Ways per set of a flow table (flowtable.h), and the age (seconds of
 * settings.clock, which vc5d moves every 30 s) a flow's stamp must have
 * before a new flow may overwrite it: an insert into two full sets of
 * flows seen more recently is refused (counted in vc5_cpu_state.full), so
 * a flood of new flows cannot push out established ones. In a clean
 * bucket a flow's stamp moves only on sampled packets (1 in VC5_SAMPLE):
 * a flow of a few packets a second is stamped well within this. */
#define VC5_WAYS 4
#define VC5_EVICT_AGE 120

/* Default map sizes, in flows; user space may shrink them at load (tests
 * do). A flow table holds these / VC5_WAYS sets, a power of two. */
#define VC5_MAX_SERVICES 4096
#define VC5_MAX_BACKENDS 65536
#define VC5_FLOWS_TCP4 (1u << 21)
#define VC5_FLOWS_TCP6 (1u << 20)
#define VC5_FLOWS_UDP4 (1u << 18)
#define VC5_FLOWS_UDP6 (1u << 18)

/* Flow sync: the ring buffer's size (bytes, a power of two; ~300,000
 * events), peers shown in sync_status, and the reasons a datagram is
 * rejected (their names are in vc5-xdp/src/flowsync/status.rs). */
#define VC5_FLOW_EVENTS (16u << 20)
#define VC5_SYNC_PEERS 32
#define VC5_SYNC_REASONS 16

/* vc5_flow_event.kind */
#define VC5_EVENT_NEW 1      /* inserted (a new flow, or one restored from a cache) */
#define VC5_EVENT_REPIN 2    /* its real was unusable: pinned to the bucket's */
#define VC5_EVENT_TAKEOVER 3 /* found in a peer's table, now local */
#define VC5_EVENT_REFRESH 4  /* a packet in a new clock tick */

/* vc5_sync_status.state of entry 0 */
#define VC5_SYNC_STARTING 0 /* not yet listening */
#define VC5_SYNC_RESYNCING 1 /* asked the peers for their flows */
#define VC5_SYNC_SYNCED 2    /* every peer heard has sent its flows (or none answered) */

/* vc5_backend.flags */
#define VC5_BACKEND_USABLE 0x1 /* MAC resolved and real not failed */
#define VC5_BACKEND_OUTER6 0x2 /* tunnels: the outer header is IPv6 */
/* vlan is the real's tagging: its VID, or 0 for untagged. Without it a
 * layer-2 frame keeps the tag it came with (the reals on the ingress VLAN,
 * vc5's rule before per-real VLANs); a tunnel's outer frame is tagged iff
 * vlan is not 0 either way. */
#define VC5_BACKEND_VLAN 0x4

/* vc5_backend.tunnel: how a packet reaches the real. */
#define VC5_TUNNEL_NONE 0 /* layer 2: new MACs, the packet unchanged */
#define VC5_TUNNEL_IPIP 1 /* outer IP, protocol 4 (IPv4 inside) or 41 (IPv6) */
#define VC5_TUNNEL_GRE 2  /* outer IP, then a 4-byte GRE header (RFC 2784) */
#define VC5_TUNNEL_FOU 3  /* outer IP, UDP, then the packet (Linux FOU) */
#define VC5_TUNNEL_GUE 4  /* outer IP, UDP, a 4-byte GUE header (variant 0) */

/* Probes through the VIP (probe.h): the NAT prefixes, which exist only
 * inside vc5d's probe namespace (RFC 2544's benchmarking range and a ULA),
 * with the pair's index in the low 16 bits, and how many pairs there are. */
#define VC5_PROBE_NAT4 0xc6130000 /* 198.19.0.0/16, host order */
#define VC5_PROBE_NAT6_W0 0xfd766335 /* fd76:6335:7072:1::/64, host order */
#define VC5_PROBE_NAT6_W1 0x70720001
#define VC5_MAX_PROBES 65536
#define VC5_PROBE_REPLIES 65536

/* Why a probe packet got its verdict; index of probe_stats. */
enum vc5_probe_reason {
	VC5_PROBE_SENT = 0,    /* a probe sent to its real */
	VC5_PROBE_REPLY,       /* a reply handed to the probe namespace */
	VC5_PROBE_NO_WAY,      /* to a NAT address with no usable way (or none) */
	VC5_PROBE_NOT_PROBE,   /* from the namespace, but not TCP/UDP to a NAT address */
	VC5_PROBE_REASONS,
};

/* What an ICMP "too big" answer quotes of the packet that did not fit, at
 * most: its IP header and the start of its TCP/UDP header are all a
 * client's stack needs to find the socket. A multiple of 4 (checksums are
 * summed by words). */
#define VC5_TOO_BIG_QUOTE 128

/* Why a packet got its verdict; index of the global "stats" map. */
enum vc5_reason {
	VC5_PASS_NOT_IP = 0,   /* not IPv4/IPv6 (ARP, LLDP, ...) */
	VC5_PASS_SHORT,        /* frame ends before the IP destination */
	VC5_PASS_NOT_VIP,      /* not addressed to a VIP service */
	VC5_TX,                /* sent to a real on the same interface */
	VC5_REDIRECT,          /* sent to a real behind another interface */
	VC5_DROP_FRAGMENT,     /* IP fragment addressed to a VIP */
	VC5_DROP_MALFORMED,    /* addressed to a VIP, L3/L4 header invalid or cut */
	VC5_DROP_NO_BACKEND,   /* the service has no usable real */
	VC5_ICMP_TX,           /* ICMP error quoting a VIP flow, sent to its real */
	VC5_TOO_BIG_TX,        /* too big for its tunnel: ICMP "too big" sent back */
	VC5_DROP_TOO_BIG,      /* too big for its tunnel and may not be answered (no DF) */
	VC5_REASONS,
};

#endif
