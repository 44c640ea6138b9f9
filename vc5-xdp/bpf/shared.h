/* SPDX-License-Identifier: (GPL-2.0-only OR BSD-2-Clause) */
/*
 * vc5 data plane: every map key and value, in one place.
 *
 * These layouts are an ABI: the maps are pinned and survive a restart of
 * vc5d, and vc5-xdp/src/maps.rs mirrors them #[repr(C)]. Padding is
 * explicit so that both sides agree byte for byte. The size and every
 * field offset of each struct are pinned at the end of this file, and by the
 * same numbers in maps.rs, so that a change on one side alone fails the
 * build; the Rust test btf_layout also compares the mirrors with the BTF of
 * the built object (bpftool).
 */
#ifndef VC5_SHARED_H
#define VC5_SHARED_H

#include <linux/types.h>

/* settings[0]: which half of svc_slots is live and its hash seed, and the
 * clock user space keeps (seconds, CLOCK_BOOTTIME; 0 before vc5d set it)
 * that flows are stamped with, so that a sweep can tell dead flows.
 * generation: bumped by vc5d after every programming that changed a
 * service, a table or a backend, so vc5-flowsync knows when to re-read
 * them (its copies of the tables and of the backends' addresses).
 * insert_limit: flows one CPU may insert per second (0: no bound); a
 * packet over it is forwarded all the same, its flow left out (counted in
 * vc5_cpu_state.refused). */
struct vc5_settings {
	__u32 active;  /* 0 or 1 */
	__u32 seed[2]; /* hash seed of each half */
	__u32 clock;
	__u32 generation;
	__u32 insert_limit;
};

/* A service endpoint: VIP (IPv4 as ::ffff:a.b.c.d), port and protocol as
 * they appear on the wire (port in network byte order). Port 0 / proto 0
 * is the VIP's own marker entry, used for fragments and ICMP. */
struct vc5_svc_key {
	__u8 addr[16];
	__u16 port;
	__u8 proto;
	__u8 _pad;
};

/* One slot of svc_slots. vip == 0 marks an empty slot. */
struct vc5_svc_slot {
	struct vc5_svc_key key;
	__u16 service; /* index into tables/service_stats; 0 for a VIP marker */
	__u16 vip;     /* VIP index (1-based), for user space's accounting */
};

/* tables[service]: backend index per hash bucket; 0 means no real.
 *
 * moved: bit k set means bucket k's real has changed while flows may still
 * be pinned to a former real, so a packet that creates no state (SYN, RST,
 * ICMP error) must look its flow up before trusting the bucket. Where the
 * bit is clear, any flow of the bucket is pinned to the bucket's real, and
 * such a packet skips the flow table. User space sets bits with every
 * table change and clears them after a sweep of the TCP flow tables; the
 * program sets one when it pins a flow elsewhere than its bucket. */
struct vc5_table {
	__u16 backend[4096]; /* VC5_TABLE_SIZE */
	__u64 moved[64];     /* VC5_TABLE_SIZE / 64 */
};

/* backends[index]: one real of one service. Index 0 is never used.
 *
 * With tunnel VC5_TUNNEL_NONE the frame keeps its IP packet and gets new
 * MACs (layer-2 DSR). With a tunnel the client's IP packet, unchanged, is
 * carried in an outer IPv4 (addr is ::ffff:a.b.c.d) or IPv6 header from
 * src_addr to addr, and mac is the next hop's: the real's when it is
 * on-link, else the gateway's the kernel routes it through. One entry is
 * one cache line: the established path reads nothing else of it. */
struct vc5_backend {
	__u8 mac[6];     /* the next hop's MAC: the frame's new destination */
	__u8 src_mac[6]; /* the egress interface's MAC: the new source */
	__u32 ifindex;   /* egress interface; XDP_TX when it is the ingress */
	__u16 flags;     /* VC5_BACKEND_* */
	__u16 service;   /* owning service; a peer's flow must name one of its own */
	__u8 addr[16];   /* the real's address: the outer destination */
	/* Bumped by user space with every change of the entry (a failure, a
	 * recovery, a new MAC): a CPU's cache entry made under another epoch
	 * is stale, because another CPU may have re-pinned the flow meanwhile. */
	__u16 epoch;
	__u16 tunnel_port; /* FOU/GUE: the real's UDP port, network order */
	__u8 src_addr[16]; /* tunnels: the outer source, this host's address */
	__u16 mtu;         /* tunnels: the egress MTU (0: not checked) */
	__u16 vlan;        /* 802.1Q VLAN ID to send with (0: untagged; see VC5_BACKEND_VLAN) */
	__u8 tunnel;       /* VC5_TUNNEL_* */
	__u8 _pad[3];
};

/* Flow keys as seen on the wire (network byte order), client to VIP. */
struct vc5_flow4 {
	__u32 saddr;
	__u32 daddr;
	__u16 sport;
	__u16 dport;
};

struct vc5_flow6 {
	__u8 saddr[16];
	__u8 daddr[16];
	__u16 sport;
	__u16 dport;
};

/* A flow of a peer's table (peer_* maps, written by vc5-flowsync). */
struct vc5_flow {
	__u32 backend;
	__u32 seen; /* settings.clock when a packet last touched the entry */
};

/* This host's flow tables (flows_* maps, see flowtable.h) are arrays of
 * sets of VC5_WAYS ways; a way is a key and this value. backend 0 marks a
 * free way (backend indexes are below VC5_MAX_BACKENDS = 2^16). seen: the
 * low 16 bits of settings.clock when a packet last touched the flow;
 * readers compare it with the clock modulo 2^16 (18 hours, far beyond any
 * idle timeout). The key comes first so that each 8-byte word a writer
 * stores is whole: the last word holds the ports with the value, so a way
 * that two CPUs overwrite at once can pair a value only with its own
 * flow's ports. */
struct vc5_fval {
	__u16 backend;
	__u16 seen;
};

struct vc5_way4 {
	struct vc5_flow4 key;
	struct vc5_fval v;
};

struct vc5_way6 {
	struct vc5_flow6 key;
	struct vc5_fval v;
};

struct vc5_set4 {
	struct vc5_way4 way[4]; /* VC5_WAYS: one cache line */
};

struct vc5_set6 {
	struct vc5_way6 way[4]; /* VC5_WAYS */
};

/* One entry of a CPU's flow cache (flow_cache4/6): a direct-mapped copy
 * of flows this CPU saw in the flow table, so that an established flow costs an
 * inlined array read instead of a hash-map lookup. Valid only while the
 * backend's epoch and the clock are those it was made under: so every
 * CPU follows the flow table after a backend changes, and the entry's "seen" stamp
 * is refreshed at least once per clock tick while the flow has packets. */
struct vc5_cache4 {
	struct vc5_flow4 key;
	__u8 proto;
	__u8 _pad;
	__u16 hits;
	__u16 backend;
	__u16 epoch; /* vc5_backend.epoch when the entry was made */
	__u32 clock; /* settings.clock when the entry was made */
};

struct vc5_cache6 {
	struct vc5_flow6 key;
	__u8 proto;
	__u8 _pad;
	__u16 hits;
	__u16 backend;
	__u16 epoch;
	__u32 clock;
};

/* peer_moved[service]: the flow-sync twin of vc5_table.moved, owned by
 * vc5-flowsync. Bit k set: a flow learned from a peer (peer_* maps) may be
 * pinned to another real than bucket k's. vc5-flowsync sets the bit before
 * it writes such a flow and clears it in its own sweep; the program treats
 * a bucket as moved when either bitmap says so. */
struct vc5_peer_moved {
	__u64 bits[64]; /* VC5_TABLE_SIZE / 64 */
};

/* A record of the flow_events ring buffer: a flow this host's program
 * inserted, re-pinned, took over from a peer's table, or refreshed (its
 * "seen" stamp moved to a new clock tick), for vc5-flowsync to send. */
struct vc5_flow_event {
	__u8 kind;  /* VC5_EVENT_* */
	__u8 v6;    /* key holds a vc5_flow6; else a vc5_flow4 in its first 12 bytes */
	__u8 proto; /* IPPROTO_TCP or IPPROTO_UDP */
	__u8 _pad;
	__u32 backend; /* the local backend index the flow is pinned to */
	__u8 key[36];  /* sizeof(struct vc5_flow6) */
};

/* sync_status[0] is this host's vc5-flowsync, sync_status[1..] its peers
 * (one per source address, in the order first heard). Written only by
 * vc5-flowsync, as whole entries; read by vc5d for its status, console,
 * metrics and D-Bus, and by the program (entry 0's "on" only). */
struct vc5_sync_status {
	__u32 on;    /* entry 0: vc5-flowsync runs and reads flow_events */
	__u32 state; /* entry 0: VC5_SYNC_*; a peer: 1 while it is known */
	__u64 sender;
	__u64 epoch;
	__u8 addr[16];       /* the peer's source address (entry 0: ours) */
	__u64 started_ms;    /* entry 0: when this vc5-flowsync started */
	__u64 updated_ms;    /* entry 0: heartbeat; a peer: last heard */
	__u64 datagrams;     /* entry 0: sent; a peer: accepted from it */
	__u64 records;       /* entry 0: sent; a peer: received from it */
	__u64 written;       /* records written into the peer tables */
	__u64 gaps;          /* sequence numbers skipped by the peer's datagrams */
	__u64 unknown_real;  /* records naming a service or real unknown here */
	__u64 rate_limited;  /* records over the per-sender rate */
	__u64 lost;          /* entry 0: flow events the ring had no room for */
	__u64 delay_p50_us;  /* propagation delay (send time to write) */
	__u64 delay_p99_us;
	__u64 delay_max_us;
	__u64 rejects[16];   /* VC5_SYNC_REASONS, by the reason's index */
};

/* cpu_state[0], per CPU: the program's own bookkeeping. */
struct vc5_cpu_state {
	__u32 clock;   /* the second (coarse ns >> 30) that "inserts" counts in */
	__u32 inserts; /* flows this CPU inserted in that second */
	__u32 sample;  /* packets that may insert, for the 1-in-VC5_SAMPLE choice */
	__u32 evicted; /* inserts that overwrote an idle flow (both sets full) */
	__u64 refused; /* inserts refused by settings.insert_limit */
	__u32 full;    /* inserts refused: both sets full of recently seen flows */
	__u32 deep;    /* 1 if this CPU's last insert read the second set */
};

/* Per-CPU counters. */
struct vc5_counter {
	__u64 packets;
	__u64 bytes;
};

struct vc5_backend_stats {
	__u64 packets;
	__u64 bytes;
	__u64 new_flows;
};

/* Probes through the VIP (probe.h). vc5d's health checks of a real "via
 * the VIP" leave a network namespace of vc5d's own through a veth pair,
 * addressed to a NAT address that names one (VIP, real) pair: IPv4
 * VC5_PROBE_NAT4 + index, IPv6 VC5_PROBE_NAT6 + index. */

/* probe_cfg[0]: the probe namespace as vc5d set it up (ifindex 0: none). */
struct vc5_probe_cfg {
	__u32 ifindex;   /* the veth's host end: where replies go */
	__u32 trunk;     /* egress of a probe whose way says "the ingress" (ifindex 0) */
	__u8 ns_mac[6];  /* the namespace end's MAC: replies' destination */
	__u8 host_mac[6]; /* the host end's MAC: replies' source */
	__u32 src4;      /* this host's IPv4 address probes leave from (0: none) */
	__u32 ns4;       /* the namespace's IPv4 address: replies' destination */
	__u8 src6[16];   /* this host's IPv6 address probes leave from (::: none) */
	__u8 ns6[16];    /* the namespace's IPv6 address */
	__u32 _pad;
};

/* probes[index]: the pair a NAT address names: the VIP the probe is
 * addressed to, and the way to the real exactly as its clients' packets
 * take it (MACs, VLAN, tunnel), written whether or not the real is in
 * service (way.flags has VC5_BACKEND_USABLE while the way is known), so
 * that a failed real's probes still reach it and can see it recover. */
struct vc5_probe {
	struct vc5_backend way;
	__u8 vip[16]; /* IPv4 as ::ffff:a.b.c.d */
};

/* probe_replies: a probe's reply as it comes back, VIP:port to this
 * host's address:port, to the index of the pair whose NAT address the
 * namespace's socket talks to. Probe sockets bind distinct local ports, so
 * (VIP, port, local port, protocol) names one socket. */
struct vc5_probe_key {
	__u8 vip[16];
	__u16 vport; /* network order */
	__u16 lport; /* network order */
	__u8 proto;
	__u8 _pad[3];
};

/* The ABI, pinned: the size and field offsets of every struct above, the
 * same numbers as the assertions at the end of maps.rs. A change here must
 * change both, and is a change of the pinned maps' layout (see the comment
 * at the top). These hold without bpftool, and for vc5_flow_event too, which
 * leaves no type in the BTF (a ring buffer has no value type). The way
 * offsets also keep a way's last 8-byte word the ports and the value, which
 * flowtable.h and flowtable.rs store whole. */
#define VC5_ABI_SIZE(s, n)                                                    \
	_Static_assert(sizeof(struct s) == (n), "sizeof(struct " #s ") != " #n)
#define VC5_ABI_AT(s, f, n)                                                   \
	_Static_assert(__builtin_offsetof(struct s, f) == (n),                 \
		       "offsetof(struct " #s ", " #f ") != " #n)

VC5_ABI_SIZE(vc5_settings, 24);
VC5_ABI_AT(vc5_settings, active, 0);
VC5_ABI_AT(vc5_settings, seed, 4);
VC5_ABI_AT(vc5_settings, clock, 12);
VC5_ABI_AT(vc5_settings, generation, 16);
VC5_ABI_AT(vc5_settings, insert_limit, 20);

VC5_ABI_SIZE(vc5_svc_key, 20);
VC5_ABI_AT(vc5_svc_key, addr, 0);
VC5_ABI_AT(vc5_svc_key, port, 16);
VC5_ABI_AT(vc5_svc_key, proto, 18);
VC5_ABI_AT(vc5_svc_key, _pad, 19);

VC5_ABI_SIZE(vc5_svc_slot, 24);
VC5_ABI_AT(vc5_svc_slot, key, 0);
VC5_ABI_AT(vc5_svc_slot, service, 20);
VC5_ABI_AT(vc5_svc_slot, vip, 22);

VC5_ABI_SIZE(vc5_table, 8704);
VC5_ABI_AT(vc5_table, backend, 0);
VC5_ABI_AT(vc5_table, moved, 8192);

VC5_ABI_SIZE(vc5_backend, 64);
VC5_ABI_AT(vc5_backend, mac, 0);
VC5_ABI_AT(vc5_backend, src_mac, 6);
VC5_ABI_AT(vc5_backend, ifindex, 12);
VC5_ABI_AT(vc5_backend, flags, 16);
VC5_ABI_AT(vc5_backend, service, 18);
VC5_ABI_AT(vc5_backend, addr, 20);
VC5_ABI_AT(vc5_backend, epoch, 36);
VC5_ABI_AT(vc5_backend, tunnel_port, 38);
VC5_ABI_AT(vc5_backend, src_addr, 40);
VC5_ABI_AT(vc5_backend, mtu, 56);
VC5_ABI_AT(vc5_backend, vlan, 58);
VC5_ABI_AT(vc5_backend, tunnel, 60);
VC5_ABI_AT(vc5_backend, _pad, 61);

VC5_ABI_SIZE(vc5_flow4, 12);
VC5_ABI_AT(vc5_flow4, saddr, 0);
VC5_ABI_AT(vc5_flow4, daddr, 4);
VC5_ABI_AT(vc5_flow4, sport, 8);
VC5_ABI_AT(vc5_flow4, dport, 10);

VC5_ABI_SIZE(vc5_flow6, 36);
VC5_ABI_AT(vc5_flow6, saddr, 0);
VC5_ABI_AT(vc5_flow6, daddr, 16);
VC5_ABI_AT(vc5_flow6, sport, 32);
VC5_ABI_AT(vc5_flow6, dport, 34);

VC5_ABI_SIZE(vc5_flow, 8);
VC5_ABI_AT(vc5_flow, backend, 0);
VC5_ABI_AT(vc5_flow, seen, 4);

VC5_ABI_SIZE(vc5_fval, 4);
VC5_ABI_AT(vc5_fval, backend, 0);
VC5_ABI_AT(vc5_fval, seen, 2);

VC5_ABI_SIZE(vc5_way4, 16);
VC5_ABI_AT(vc5_way4, key, 0);
VC5_ABI_AT(vc5_way4, v, 12);

VC5_ABI_SIZE(vc5_way6, 40);
VC5_ABI_AT(vc5_way6, key, 0);
VC5_ABI_AT(vc5_way6, v, 36);

VC5_ABI_SIZE(vc5_set4, 64);
VC5_ABI_AT(vc5_set4, way, 0);

VC5_ABI_SIZE(vc5_set6, 160);
VC5_ABI_AT(vc5_set6, way, 0);

VC5_ABI_SIZE(vc5_cache4, 24);
VC5_ABI_AT(vc5_cache4, key, 0);
VC5_ABI_AT(vc5_cache4, proto, 12);
VC5_ABI_AT(vc5_cache4, _pad, 13);
VC5_ABI_AT(vc5_cache4, hits, 14);
VC5_ABI_AT(vc5_cache4, backend, 16);
VC5_ABI_AT(vc5_cache4, epoch, 18);
VC5_ABI_AT(vc5_cache4, clock, 20);

VC5_ABI_SIZE(vc5_cache6, 48);
VC5_ABI_AT(vc5_cache6, key, 0);
VC5_ABI_AT(vc5_cache6, proto, 36);
VC5_ABI_AT(vc5_cache6, _pad, 37);
VC5_ABI_AT(vc5_cache6, hits, 38);
VC5_ABI_AT(vc5_cache6, backend, 40);
VC5_ABI_AT(vc5_cache6, epoch, 42);
VC5_ABI_AT(vc5_cache6, clock, 44);

VC5_ABI_SIZE(vc5_peer_moved, 512);
VC5_ABI_AT(vc5_peer_moved, bits, 0);

VC5_ABI_SIZE(vc5_flow_event, 44);
VC5_ABI_AT(vc5_flow_event, kind, 0);
VC5_ABI_AT(vc5_flow_event, v6, 1);
VC5_ABI_AT(vc5_flow_event, proto, 2);
VC5_ABI_AT(vc5_flow_event, _pad, 3);
VC5_ABI_AT(vc5_flow_event, backend, 4);
VC5_ABI_AT(vc5_flow_event, key, 8);
_Static_assert(sizeof(((struct vc5_flow_event *)0)->key) == sizeof(struct vc5_flow6),
	       "vc5_flow_event.key holds a vc5_flow6");

VC5_ABI_SIZE(vc5_sync_status, 264);
VC5_ABI_AT(vc5_sync_status, on, 0);
VC5_ABI_AT(vc5_sync_status, state, 4);
VC5_ABI_AT(vc5_sync_status, sender, 8);
VC5_ABI_AT(vc5_sync_status, epoch, 16);
VC5_ABI_AT(vc5_sync_status, addr, 24);
VC5_ABI_AT(vc5_sync_status, started_ms, 40);
VC5_ABI_AT(vc5_sync_status, updated_ms, 48);
VC5_ABI_AT(vc5_sync_status, datagrams, 56);
VC5_ABI_AT(vc5_sync_status, records, 64);
VC5_ABI_AT(vc5_sync_status, written, 72);
VC5_ABI_AT(vc5_sync_status, gaps, 80);
VC5_ABI_AT(vc5_sync_status, unknown_real, 88);
VC5_ABI_AT(vc5_sync_status, rate_limited, 96);
VC5_ABI_AT(vc5_sync_status, lost, 104);
VC5_ABI_AT(vc5_sync_status, delay_p50_us, 112);
VC5_ABI_AT(vc5_sync_status, delay_p99_us, 120);
VC5_ABI_AT(vc5_sync_status, delay_max_us, 128);
VC5_ABI_AT(vc5_sync_status, rejects, 136);

VC5_ABI_SIZE(vc5_cpu_state, 32);
VC5_ABI_AT(vc5_cpu_state, clock, 0);
VC5_ABI_AT(vc5_cpu_state, inserts, 4);
VC5_ABI_AT(vc5_cpu_state, sample, 8);
VC5_ABI_AT(vc5_cpu_state, evicted, 12);
VC5_ABI_AT(vc5_cpu_state, refused, 16);
VC5_ABI_AT(vc5_cpu_state, full, 24);
VC5_ABI_AT(vc5_cpu_state, deep, 28);

VC5_ABI_SIZE(vc5_counter, 16);
VC5_ABI_AT(vc5_counter, packets, 0);
VC5_ABI_AT(vc5_counter, bytes, 8);

VC5_ABI_SIZE(vc5_probe_cfg, 64);
VC5_ABI_AT(vc5_probe_cfg, ifindex, 0);
VC5_ABI_AT(vc5_probe_cfg, trunk, 4);
VC5_ABI_AT(vc5_probe_cfg, ns_mac, 8);
VC5_ABI_AT(vc5_probe_cfg, host_mac, 14);
VC5_ABI_AT(vc5_probe_cfg, src4, 20);
VC5_ABI_AT(vc5_probe_cfg, ns4, 24);
VC5_ABI_AT(vc5_probe_cfg, src6, 28);
VC5_ABI_AT(vc5_probe_cfg, ns6, 44);
VC5_ABI_AT(vc5_probe_cfg, _pad, 60);

VC5_ABI_SIZE(vc5_probe, 80);
VC5_ABI_AT(vc5_probe, way, 0);
VC5_ABI_AT(vc5_probe, vip, 64);

VC5_ABI_SIZE(vc5_probe_key, 24);
VC5_ABI_AT(vc5_probe_key, vip, 0);
VC5_ABI_AT(vc5_probe_key, vport, 16);
VC5_ABI_AT(vc5_probe_key, lport, 18);
VC5_ABI_AT(vc5_probe_key, proto, 20);
VC5_ABI_AT(vc5_probe_key, _pad, 21);

VC5_ABI_SIZE(vc5_backend_stats, 24);
VC5_ABI_AT(vc5_backend_stats, packets, 0);
VC5_ABI_AT(vc5_backend_stats, bytes, 8);
VC5_ABI_AT(vc5_backend_stats, new_flows, 16);

#undef VC5_ABI_SIZE
#undef VC5_ABI_AT

#endif
