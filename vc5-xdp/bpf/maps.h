/* SPDX-License-Identifier: (GPL-2.0-only OR BSD-2-Clause) */
/*
 * vc5 data plane: the maps. All are pinned by name (LIBBPF_PIN_BY_NAME) in
 * the directory vc5d passes as --bpffs, so that a restarted vc5d, or a new
 * program version, picks up the same tables and flows.
 */
#ifndef VC5_MAPS_H
#define VC5_MAPS_H

#include <bpf/bpf_helpers.h>
#include "consts.h"
#include "shared.h"

struct {
	__uint(type, BPF_MAP_TYPE_ARRAY);
	__uint(max_entries, 1);
	__type(key, __u32);
	__type(value, struct vc5_settings);
	__uint(pinning, LIBBPF_PIN_BY_NAME);
} settings SEC(".maps");

struct {
	__uint(type, BPF_MAP_TYPE_ARRAY);
	__uint(max_entries, 2 * VC5_SLOTS);
	__type(key, __u32);
	__type(value, struct vc5_svc_slot);
	__uint(pinning, LIBBPF_PIN_BY_NAME);
} svc_slots SEC(".maps");

struct {
	__uint(type, BPF_MAP_TYPE_ARRAY);
	__uint(max_entries, VC5_MAX_SERVICES);
	__type(key, __u32);
	__type(value, struct vc5_table);
	__uint(pinning, LIBBPF_PIN_BY_NAME);
} tables SEC(".maps");

struct {
	__uint(type, BPF_MAP_TYPE_ARRAY);
	__uint(max_entries, VC5_MAX_BACKENDS);
	__type(key, __u32);
	__type(value, struct vc5_backend);
	__uint(pinning, LIBBPF_PIN_BY_NAME);
} backends SEC(".maps");

/* Established flows, one table per family and protocol so that a flood of
 * one kind cannot evict the flows of another: vc5's own set-associative
 * tables (flowtable.h) in ARRAY maps, whose lookups the verifier inlines
 * and which user space maps into its memory (BPF_F_MMAPABLE) to sweep and
 * read them. max_entries counts sets; vc5_flow_mask holds each table's
 * set count less one, set by the loader to the sizes in force. */
#define VC5_FLOW_MAP(name, settype, size)                                      \
	struct {                                                               \
		__uint(type, BPF_MAP_TYPE_ARRAY);                              \
		__uint(max_entries, (size) / VC5_WAYS);                        \
		__uint(map_flags, BPF_F_MMAPABLE);                             \
		__type(key, __u32);                                            \
		__type(value, settype);                                        \
		__uint(pinning, LIBBPF_PIN_BY_NAME);                           \
	} name SEC(".maps")

VC5_FLOW_MAP(flows_tcp4, struct vc5_set4, VC5_FLOWS_TCP4);
VC5_FLOW_MAP(flows_udp4, struct vc5_set4, VC5_FLOWS_UDP4);
VC5_FLOW_MAP(flows_tcp6, struct vc5_set6, VC5_FLOWS_TCP6);
VC5_FLOW_MAP(flows_udp6, struct vc5_set6, VC5_FLOWS_UDP6);

/* Sets less one of flows_tcp4, flows_udp4, flows_tcp6, flows_udp6 (in that
 * order), written by the loader before the program is verified. */
const volatile __u32 vc5_flow_mask[4] = {
	VC5_FLOWS_TCP4 / VC5_WAYS - 1,
	VC5_FLOWS_UDP4 / VC5_WAYS - 1,
	VC5_FLOWS_TCP6 / VC5_WAYS - 1,
	VC5_FLOWS_UDP6 / VC5_WAYS - 1,
};

/* Flows learned from peers by vc5-flowsync, consulted after a miss in the
 * flows_* tables in a moved bucket. A common LRU (no BPF_F_NO_COMMON_LRU):
 * one user-space writer fills them all (a per-CPU LRU would give it one
 * CPU's share), and the local tables never lose a flow to a peer's. */
#define VC5_PEER_MAP(name, keytype, size)                                     \
	struct {                                                               \
		__uint(type, BPF_MAP_TYPE_LRU_HASH);                           \
		__uint(max_entries, size);                                     \
		__type(key, keytype);                                          \
		__type(value, struct vc5_flow);                                \
		__uint(pinning, LIBBPF_PIN_BY_NAME);                           \
	} name SEC(".maps")

VC5_PEER_MAP(peer_tcp4, struct vc5_flow4, VC5_FLOWS_TCP4);
VC5_PEER_MAP(peer_udp4, struct vc5_flow4, VC5_FLOWS_UDP4);
VC5_PEER_MAP(peer_tcp6, struct vc5_flow6, VC5_FLOWS_TCP6);
VC5_PEER_MAP(peer_udp6, struct vc5_flow6, VC5_FLOWS_UDP6);

struct {
	__uint(type, BPF_MAP_TYPE_ARRAY);
	__uint(max_entries, VC5_MAX_SERVICES);
	__type(key, __u32);
	__type(value, struct vc5_peer_moved);
	__uint(pinning, LIBBPF_PIN_BY_NAME);
} peer_moved SEC(".maps");

struct {
	__uint(type, BPF_MAP_TYPE_RINGBUF);
	__uint(max_entries, VC5_FLOW_EVENTS);
	__uint(pinning, LIBBPF_PIN_BY_NAME);
} flow_events SEC(".maps");

/* Flow events dropped because the ring was full (vc5-flowsync not
 * reading, or a burst larger than the ring). */
struct {
	__uint(type, BPF_MAP_TYPE_PERCPU_ARRAY);
	__uint(max_entries, 1);
	__type(key, __u32);
	__type(value, __u64);
	__uint(pinning, LIBBPF_PIN_BY_NAME);
} flow_events_lost SEC(".maps");

struct {
	__uint(type, BPF_MAP_TYPE_ARRAY);
	__uint(max_entries, 1 + VC5_SYNC_PEERS);
	__type(key, __u32);
	__type(value, struct vc5_sync_status);
	__uint(pinning, LIBBPF_PIN_BY_NAME);
} sync_status SEC(".maps");

struct {
	__uint(type, BPF_MAP_TYPE_PERCPU_ARRAY);
	__uint(max_entries, 1);
	__type(key, __u32);
	__type(value, struct vc5_cpu_state);
	__uint(pinning, LIBBPF_PIN_BY_NAME);
} cpu_state SEC(".maps");

/* Not pinned: SYNs whose flows have not had another packet yet, by the
 * bits of their hash above the bucket's (see VC5_PENDING_BITS). A restart
 * forgets a few handshakes in flight: their flows are then inserted by a
 * sampled packet instead. */
struct {
	__uint(type, BPF_MAP_TYPE_ARRAY);
	__uint(max_entries, VC5_PENDING_WORDS);
	__type(key, __u32);
	__type(value, __u64);
} flow_pending SEC(".maps");

/* Not pinned: a cache, rebuilt from the flow tables by traffic. */
struct {
	__uint(type, BPF_MAP_TYPE_PERCPU_ARRAY);
	__uint(max_entries, VC5_CACHE_SIZE);
	__type(key, __u32);
	__type(value, struct vc5_cache4);
} flow_cache4 SEC(".maps");

struct {
	__uint(type, BPF_MAP_TYPE_PERCPU_ARRAY);
	__uint(max_entries, VC5_CACHE_SIZE);
	__type(key, __u32);
	__type(value, struct vc5_cache6);
} flow_cache6 SEC(".maps");

struct {
	__uint(type, BPF_MAP_TYPE_PERCPU_ARRAY);
	__uint(max_entries, VC5_REASONS);
	__type(key, __u32);
	__type(value, struct vc5_counter);
	__uint(pinning, LIBBPF_PIN_BY_NAME);
} stats SEC(".maps");

struct {
	__uint(type, BPF_MAP_TYPE_PERCPU_ARRAY);
	__uint(max_entries, VC5_MAX_BACKENDS);
	__type(key, __u32);
	__type(value, struct vc5_backend_stats);
	__uint(pinning, LIBBPF_PIN_BY_NAME);
} backend_stats SEC(".maps");

/* Packets a service dropped because it had no usable real. */
struct {
	__uint(type, BPF_MAP_TYPE_PERCPU_ARRAY);
	__uint(max_entries, VC5_MAX_SERVICES);
	__type(key, __u32);
	__type(value, struct vc5_counter);
	__uint(pinning, LIBBPF_PIN_BY_NAME);
} service_drops SEC(".maps");

/* Probes through the VIP (probe.h, shared.h). */
struct {
	__uint(type, BPF_MAP_TYPE_ARRAY);
	__uint(max_entries, 1);
	__type(key, __u32);
	__type(value, struct vc5_probe_cfg);
	__uint(pinning, LIBBPF_PIN_BY_NAME);
} probe_cfg SEC(".maps");

struct {
	__uint(type, BPF_MAP_TYPE_ARRAY);
	__uint(max_entries, VC5_MAX_PROBES);
	__type(key, __u32);
	__type(value, struct vc5_probe);
	__uint(pinning, LIBBPF_PIN_BY_NAME);
} probes SEC(".maps");

struct {
	__uint(type, BPF_MAP_TYPE_LRU_HASH);
	__uint(max_entries, VC5_PROBE_REPLIES);
	__type(key, struct vc5_probe_key);
	__type(value, __u32);
	__uint(pinning, LIBBPF_PIN_BY_NAME);
} probe_replies SEC(".maps");

struct {
	__uint(type, BPF_MAP_TYPE_PERCPU_ARRAY);
	__uint(max_entries, VC5_PROBE_REASONS);
	__type(key, __u32);
	__type(value, struct vc5_counter);
	__uint(pinning, LIBBPF_PIN_BY_NAME);
} probe_stats SEC(".maps");

#endif
