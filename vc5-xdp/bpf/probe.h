/* SPDX-License-Identifier: (GPL-2.0-only OR BSD-2-Clause) */
/*
 * vc5 data plane: health probes through the VIP.
 *
 * vc5d runs a check "via the VIP" from a network namespace of its own,
 * joined to this host by a veth pair. Inside, each (VIP, real) pair has a
 * NAT address (VC5_PROBE_NAT4/6 + index); a probe socket there connects
 * to it. Two programs turn that into a client's packet and back:
 *
 * - vc5_probe, on the veth's host end: a probe to NAT address i becomes a
 *   packet from this host's address (probe_cfg.src4/src6) to probes[i]'s
 *   VIP, delivered to the real the way the real's clients' packets are
 *   (vc5_deliver: its MACs, VLAN and tunnel), out of the way's interface
 *   (or probe_cfg.trunk). Its reply key (VIP, port, local port, protocol)
 *   is remembered in probe_replies.
 * - vc5_probe_reply, called by the main program for a TCP/UDP packet that
 *   is not for a VIP but for the probes' source address: if probe_replies
 *   knows it, the real answered a probe (from the VIP, directly, as DSR
 *   reals answer clients). It gets back the NAT address as its source and
 *   the namespace's address as its destination, loses any VLAN tag, and is
 *   redirected into the veth.
 *
 * So a real that lost the VIP (on its loopback, or behind its tunnel
 * endpoint) does not answer its probe, exactly as it would not answer a
 * client. The addresses are rewritten with incremental checksum updates
 * (RFC 1624), the TCP/UDP pseudo-header included; an IPv4 UDP datagram
 * without a checksum keeps none. Probes never touch the flow tables or the
 * VIP counters: they have probe_stats.
 */
#ifndef VC5_PROBE_H
#define VC5_PROBE_H

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

static __always_inline int vc5_probe_count(__u32 reason, __u64 bytes, int verdict)
{
	struct vc5_counter *c = bpf_map_lookup_elem(&probe_stats, &reason);

	if (c) {
		c->packets++;
		c->bytes += bytes;
	}
	return verdict;
}

/* The one's complement sum to add to a checksum when the 32-bit words
 * from[0..n) become to[0..n) (RFC 1624: ~m + m' per word). */
static __always_inline __u64 vc5_csum_delta(const __u32 *from, const __u32 *to, int n)
{
	__u64 s = 0;

#pragma unroll
	for (int i = 0; i < n; i++)
		s += (__u32)~from[i] + (__u64)to[i];
	return s;
}

static __always_inline void vc5_csum_apply(__u16 *check, __u64 delta)
{
	*check = ~vc5_fold((__u16)~*check + delta);
}

/* The TCP or UDP checksum at l4 (proto), updated by delta; an IPv4 UDP
 * datagram without one (0) keeps none, and a UDP result of 0 is sent as
 * 0xffff (0 would mean "none"). -1 if the header is cut. */
static __always_inline int vc5_l4_csum(void *l4, void *end, __u8 proto, __u64 delta, int v6)
{
	if (proto == IPPROTO_TCP) {
		struct tcphdr *th = l4;

		if ((void *)(th + 1) > end)
			return -1;
		vc5_csum_apply(&th->check, delta);
		return 0;
	}
	struct udphdr *uh = l4;

	if ((void *)(uh + 1) > end)
		return -1;
	if (!uh->check && !v6)
		return 0;
	vc5_csum_apply(&uh->check, delta);
	if (!uh->check)
		uh->check = 0xffff;
	return 0;
}

/* A NAT address's pair index, or 0 (never an index) when it is none. */
static __always_inline __u32 vc5_nat4_index(__u32 addr)
{
	__u32 a = bpf_ntohl(addr);

	return (a & 0xffff0000) == VC5_PROBE_NAT4 ? a & 0xffff : 0;
}

static __always_inline __u32 vc5_nat6_index(const __u32 *w)
{
	if (w[0] != bpf_htonl(VC5_PROBE_NAT6_W0) || w[1] != bpf_htonl(VC5_PROBE_NAT6_W1) ||
	    w[2] || (w[3] & bpf_htonl(0xffff0000)))
		return 0;
	return bpf_ntohl(w[3]) & 0xffff;
}

/* Is addr (IPv4 as ::ffff:a.b.c.d) an IPv4 address? */
static __always_inline int vc5_is_v4(const __u8 *addr)
{
	const __u32 *w = (const __u32 *)addr;

	return !w[0] && !w[1] && w[2] == VC5_V4_FOLD;
}

/* The probe from the namespace, TCP or UDP over IP without a tag: find its
 * pair, remember its reply, and rewrite its addresses. Fills p for
 * vc5_deliver and returns the pair, or NULL (counted) to drop. */
static __always_inline struct vc5_probe *vc5_probe_out(struct xdp_md *ctx, struct vc5_pkt *p,
						       const struct vc5_probe_cfg *cfg,
						       __u64 bytes)
{
	void *data = (void *)(long)ctx->data;
	void *end = (void *)(long)ctx->data_end;
	struct ethhdr *eth = data;
	struct vc5_probe_key rk = {};
	struct vc5_probe *pr;
	__u32 i, ihl;
	__u64 delta;
	__u16 *ports;
	void *l4;

	if ((void *)(eth + 1) > end)
		goto not_probe;
	p->l3off = ETH_HLEN;
	if (eth->h_proto == bpf_htons(ETH_P_IP)) {
		struct iphdr *ip = (void *)(eth + 1);
		__u32 old[2], now[2];

		if ((void *)(ip + 1) > end || (ip->frag_off & bpf_htons(0x3fff)))
			goto not_probe;
		ihl = ip->ihl * 4;
		if (ihl < sizeof(*ip) || ihl > 60 ||
		    (ip->protocol != IPPROTO_TCP && ip->protocol != IPPROTO_UDP))
			goto not_probe;
		i = vc5_nat4_index(ip->daddr);
		if (!i)
			goto not_probe;
		pr = bpf_map_lookup_elem(&probes, &i);
		if (!pr || !(pr->way.flags & VC5_BACKEND_USABLE) || !vc5_is_v4(pr->vip) ||
		    !cfg->src4)
			goto no_way;
		l4 = (void *)ip + ihl;
		ports = l4;
		if ((void *)(ports + 2) > end)
			goto not_probe;
		p->f4.sport = ports[0];
		p->f4.dport = ports[1];
		old[0] = ip->saddr;
		old[1] = ip->daddr;
		now[0] = cfg->src4;
		now[1] = ((__u32 *)pr->vip)[3];
		delta = vc5_csum_delta(old, now, 2);
		ip->saddr = now[0];
		ip->daddr = now[1];
		vc5_csum_apply(&ip->check, delta);
		if (vc5_l4_csum(l4, end, ip->protocol, delta, 0))
			goto not_probe;
		p->l4proto = ip->protocol;
		p->df = !!(ip->frag_off & bpf_htons(0x4000));
		p->ip_hl = ihl;
		p->ip_len = bpf_ntohs(ip->tot_len);
	} else if (eth->h_proto == bpf_htons(ETH_P_IPV6)) {
		struct ipv6hdr *ip = (void *)(eth + 1);
		__u32 *sa, *da;

		if ((void *)(ip + 1) > end ||
		    (ip->nexthdr != IPPROTO_TCP && ip->nexthdr != IPPROTO_UDP))
			goto not_probe; /* ND, MLD, extension headers: not a probe */
		sa = (__u32 *)&ip->saddr;
		da = (__u32 *)&ip->daddr;
		i = vc5_nat6_index(da);
		if (!i)
			goto not_probe;
		pr = bpf_map_lookup_elem(&probes, &i);
		if (!pr || !(pr->way.flags & VC5_BACKEND_USABLE) || vc5_is_v4(pr->vip) ||
		    !(((__u32 *)cfg->src6)[0] | ((__u32 *)cfg->src6)[3]))
			goto no_way;
		l4 = ip + 1;
		ports = l4;
		if ((void *)(ports + 2) > end)
			goto not_probe;
		p->f6.sport = ports[0];
		p->f6.dport = ports[1];
		delta = vc5_csum_delta(sa, (const __u32 *)cfg->src6, 4) +
			vc5_csum_delta(da, (const __u32 *)pr->vip, 4);
		__builtin_memcpy(sa, cfg->src6, 16);
		__builtin_memcpy(da, pr->vip, 16);
		if (vc5_l4_csum(l4, end, ip->nexthdr, delta, 1))
			goto not_probe;
		p->v6 = 1;
		p->l4proto = ip->nexthdr;
		p->ip_hl = sizeof(*ip);
		p->ip_len = sizeof(*ip) + bpf_ntohs(ip->payload_len);
	} else {
		goto not_probe;
	}
	__builtin_memcpy(rk.vip, pr->vip, 16);
	rk.vport = ports[1];
	rk.lport = ports[0];
	rk.proto = p->l4proto;
	bpf_map_update_elem(&probe_replies, &rk, &i, BPF_ANY);
	return pr;

no_way:
	vc5_probe_count(VC5_PROBE_NO_WAY, bytes, 0);
	return NULL;
not_probe:
	vc5_probe_count(VC5_PROBE_NOT_PROBE, bytes, 0);
	return NULL;
}

/* A TCP/UDP packet p (parsed by the main program, not for a VIP): if it is
 * the reply to a probe, hand it to the namespace; else -1 (pass it on). */
static __always_inline int vc5_probe_reply(struct xdp_md *ctx, const struct vc5_pkt *p,
					   __u64 bytes)
{
	struct vc5_probe_cfg *cfg;
	struct vc5_probe_key rk = {};
	__u32 zero = 0, *ip4, nat[4], *idx;
	__u32 l3off = p->l3off, hl = p->ip_hl;
	__u64 delta;
	void *data, *end, *l3;
	struct ethhdr *eth;

	if (p->icmp)
		return -1;
	cfg = bpf_map_lookup_elem(&probe_cfg, &zero);
	if (!cfg || !cfg->ifindex)
		return -1;
	if (p->v6) {
		if (__builtin_memcmp(p->f6.daddr, cfg->src6, 16))
			return -1;
		__builtin_memcpy(rk.vip, p->f6.saddr, 16);
		rk.vport = p->f6.sport;
		rk.lport = p->f6.dport;
	} else {
		if (p->f4.daddr != cfg->src4)
			return -1;
		ip4 = (__u32 *)rk.vip;
		ip4[2] = VC5_V4_FOLD;
		ip4[3] = p->f4.saddr;
		rk.vport = p->f4.sport;
		rk.lport = p->f4.dport;
	}
	rk.proto = p->l4proto;
	idx = bpf_map_lookup_elem(&probe_replies, &rk);
	if (!idx)
		return -1;

	data = (void *)(long)ctx->data;
	end = (void *)(long)ctx->data_end;
	if (l3off != ETH_HLEN && l3off != ETH_HLEN + 4)
		return -1;
	l3 = data + l3off;
	if (p->v6) {
		struct ipv6hdr *ip = l3;

		if ((void *)(ip + 1) > end || hl != sizeof(*ip))
			return -1;
		nat[0] = bpf_htonl(VC5_PROBE_NAT6_W0);
		nat[1] = bpf_htonl(VC5_PROBE_NAT6_W1);
		nat[2] = 0;
		nat[3] = bpf_htonl(*idx & 0xffff);
		delta = vc5_csum_delta((__u32 *)&ip->saddr, nat, 4) +
			vc5_csum_delta((__u32 *)&ip->daddr, (const __u32 *)cfg->ns6, 4);
		__builtin_memcpy(&ip->saddr, nat, 16);
		__builtin_memcpy(&ip->daddr, cfg->ns6, 16);
		if (vc5_l4_csum(ip + 1, end, p->l4proto, delta, 1))
			return -1;
	} else {
		struct iphdr *ip = l3;
		__u32 old[2], now[2];

		if ((void *)(ip + 1) > end)
			return -1;
		/* From the header itself: a bound the verifier sees. */
		hl = ip->ihl * 4;
		if (hl < sizeof(*ip))
			return -1;
		old[0] = ip->saddr;
		old[1] = ip->daddr;
		now[0] = bpf_htonl(VC5_PROBE_NAT4 | (*idx & 0xffff));
		now[1] = cfg->ns4;
		delta = vc5_csum_delta(old, now, 2);
		ip->saddr = now[0];
		ip->daddr = now[1];
		vc5_csum_apply(&ip->check, delta);
		if (vc5_l4_csum(l3 + hl, end, p->l4proto, delta, 0))
			return -1;
	}
	/* The namespace's veth is untagged: a tag goes (the MACs are
	 * rewritten, so only the inner EtherType need land in place). */
	if (l3off != ETH_HLEN && bpf_xdp_adjust_head(ctx, 4))
		return -1;
	data = (void *)(long)ctx->data;
	end = (void *)(long)ctx->data_end;
	eth = data;
	if ((void *)(eth + 1) > end)
		return XDP_DROP;
	__builtin_memcpy(eth->h_dest, cfg->ns_mac, ETH_ALEN);
	__builtin_memcpy(eth->h_source, cfg->host_mac, ETH_ALEN);
	return vc5_probe_count(VC5_PROBE_REPLY, bytes, bpf_redirect(cfg->ifindex, 0));
}

#endif
