/* SPDX-License-Identifier: (GPL-2.0-only OR BSD-2-Clause) */
/*
 * Layer-3 DSR: the client's IP packet, unchanged, inside an outer IPv4 or
 * IPv6 header to the real (IPIP, GRE, FOU, GUE), and the ICMP "too big"
 * answer when the result would not fit the egress MTU.
 *
 * Policies (README "Data plane policies"):
 * - The outer header: from this host's address (src_addr) to the real's,
 *   TTL / hop limit 64, the inner DSCP and ECN copied (RFC 6040's normal
 *   mode), IPv4 with DF set and ID 0; IPv6 with the flow hash as its flow
 *   label. FOU and GUE take the flow hash as their UDP source port, in
 *   49152-65535, so that the reals' NICs spread flows over their queues.
 * - The outer UDP checksum is 0 over IPv4 (RFC 768 lets UDP omit it). Over
 *   IPv6 it is computed without reading the payload: a valid inner TCP,
 *   UDP or ICMPv6 checksum makes the inner segment's sum the complement of
 *   its pseudo-header's, and a valid IPv4 header sums to zero. Where that
 *   does not hold (an inner IPv4 UDP datagram without a checksum, inner
 *   IPv6 extension headers) the outer checksum is 0, RFC 6935's zero
 *   checksum for tunnels: a receiver that does not accept it drops them.
 * - A packet whose encapsulation would exceed the egress MTU (the
 *   backend's mtu) is answered to the client, from the VIP, with ICMP
 *   "fragmentation needed" (IPv4 with DF) or ICMPv6 "packet too big"
 *   carrying the MTU that fits, quoting VC5_TOO_BIG_QUOTE bytes of the
 *   packet at most; an IPv4 packet without DF, and an ICMP error, that do
 *   not fit are dropped and counted (XDP cannot fragment, and an error is
 *   never answered with an error).
 * - Ethernet padding after the inner packet is not carried; a frame
 *   shorter than its IP header's length is malformed.
 * - The outer frame is untagged, or carries an 802.1Q tag of the
 *   backend's vlan (vlan.h); the incoming frame's tag is not carried.
 */
#ifndef VC5_TUNNEL_H
#define VC5_TUNNEL_H

#define VC5_GRE_LEN 4 /* no checksum, key or sequence number */
#define VC5_UDP_LEN 8
#define VC5_GUE_LEN 4

/* One's complement sum of a 64-bit accumulator of 32-bit words, folded to
 * 16 bits (network order when the words were loaded as they lie). */
static __always_inline __u16 vc5_fold(__u64 s)
{
	s = (s & 0xffffffff) + (s >> 32);
	s = (s & 0xffffffff) + (s >> 32);
	s = (s & 0xffff) + (s >> 16);
	s = (s & 0xffff) + (s >> 16);
	return s;
}

static __always_inline __u64 vc5_sum16(const __u8 *a)
{
	const __u32 *w = (const __u32 *)a;

	return (__u64)w[0] + w[1] + w[2] + w[3];
}

/* The sum of the TCP/UDP/ICMP segment of an inner packet whose checksum is
 * valid, from its pseudo-header alone; *ok is cleared where the segment's
 * checksum proves nothing (no checksum: a UDP datagram over IPv4 with 0). */
static __always_inline __u64 vc5_inner_l4_sum(const void *inner, const void *end,
					      const struct vc5_pkt *p, int *ok)
{
	__u32 l4len = p->ip_len - p->ip_hl;
	__u64 pseudo;

	if (p->v6) {
		const struct ipv6hdr *ip = inner;

		if ((void *)(ip + 1) > end)
			goto no;
		pseudo = vc5_sum16((const __u8 *)&ip->saddr) +
			 vc5_sum16((const __u8 *)&ip->daddr) + bpf_htonl(l4len) +
			 bpf_htonl(p->l4proto);
	} else {
		const struct iphdr *ip = inner;

		if ((void *)(ip + 1) > end)
			goto no;
		/* ICMP's checksum covers the message alone: it sums to zero. */
		if (p->l4proto == IPPROTO_ICMP)
			return 0;
		if (p->l4proto == IPPROTO_UDP) {
			/* An IPv4 header is at most 60 bytes: the mask
			 * tells the verifier so. */
			const struct udphdr *u = inner + (p->ip_hl & 0x3f);

			if ((void *)(u + 1) > end || !u->check)
				goto no;
		}
		pseudo = (__u64)ip->saddr + ip->daddr + bpf_htons(p->l4proto) +
			 bpf_htons(l4len);
	}
	return (__u16)~vc5_fold(pseudo);
no:
	*ok = 0;
	return 0;
}

/* The outer UDP checksum over IPv6 (see the policies above). */
static __always_inline __u16 vc5_udp6_check(const struct ipv6hdr *o, const struct udphdr *u,
					    __u32 gue, const void *inner, const void *end,
					    const struct vc5_pkt *p)
{
	int ok = 1;
	__u64 s = vc5_sum16((const __u8 *)&o->saddr) + vc5_sum16((const __u8 *)&o->daddr) +
		  bpf_htonl(bpf_ntohs(u->len)) + bpf_htonl(IPPROTO_UDP) +
		  *(const __u32 *)u + u->len + gue;

	if (p->v6) {
		const __u32 *w = inner;

		/* Extension headers would have to be summed byte by byte. */
		if (p->ip_hl != sizeof(struct ipv6hdr) || (void *)(w + 10) > end)
			return 0;
#pragma unroll
		for (int i = 0; i < 10; i++)
			s += w[i];
	}
	s += vc5_inner_l4_sum(inner, end, p, &ok);
	if (!ok)
		return 0;
	__u16 c = ~vc5_fold(s);

	return c ? c : 0xffff;
}

/* vc5_too_big for one family (a constant once inlined, so that the
 * verifier sees each family's offsets as constants). */
static __always_inline int vc5_too_big_af(struct xdp_md *ctx, const struct vc5_pkt *p,
					  __u32 mtu, __u64 bytes, const int v6)
{
	__u32 l2 = p->l3off, hl = v6 ? sizeof(struct ipv6hdr) : sizeof(struct iphdr);
	__u32 add = hl + sizeof(struct vc5_icmphdr);
	__u32 quote = (p->ip_len < VC5_TOO_BIG_QUOTE ? p->ip_len : VC5_TOO_BIG_QUOTE) & ~3u;
	void *data, *end;
	__u64 s = 0;

	if (p->icmp || (!v6 && !p->df))
		return vc5_count(VC5_DROP_TOO_BIG, bytes, XDP_DROP);
	if (l2 != ETH_HLEN && l2 != ETH_HLEN + 4)
		return vc5_count(VC5_DROP_MALFORMED, bytes, XDP_DROP);
	if (bpf_xdp_adjust_head(ctx, -(int)add))
		return vc5_count(VC5_DROP_TOO_BIG, bytes, XDP_DROP);
	data = (void *)(long)ctx->data;
	end = (void *)(long)ctx->data_end;
	/* The frame's own Ethernet header (and tag) moves to the front, its
	 * MACs swapped: the answer goes back to whoever sent the packet. */
	{
		__u8 *from = data + add, *to = data;

		if ((void *)(from + ETH_HLEN + 4) > end)
			return vc5_count(VC5_DROP_MALFORMED, bytes, XDP_DROP);
		__builtin_memcpy(to, from + ETH_ALEN, ETH_ALEN);
		__builtin_memcpy(to + ETH_ALEN, from, ETH_ALEN);
		__builtin_memcpy(to + 2 * ETH_ALEN, from + 2 * ETH_ALEN, 6);
	}
	if (bpf_xdp_adjust_tail(ctx, (int)(l2 + add + quote) - (int)(end - data)))
		return vc5_count(VC5_DROP_TOO_BIG, bytes, XDP_DROP);
	data = (void *)(long)ctx->data;
	end = (void *)(long)ctx->data_end;

	void *l3 = data + (l2 == ETH_HLEN ? ETH_HLEN : ETH_HLEN + 4);
	struct vc5_icmphdr *ic = l3 + hl;
	const __u32 *q = (const void *)(ic + 1);

	if ((void *)(q + hl / 4) > end)
		return vc5_count(VC5_DROP_MALFORMED, bytes, XDP_DROP);
	/* A bounded loop the verifier walks: the quote may be shorter. */
	for (int i = 0; i < VC5_TOO_BIG_QUOTE / 4; i++) {
		if (i * 4 >= quote || (void *)(q + i + 1) > end)
			break;
		s += q[i];
	}
	ic->code = 0;
	ic->csum = 0;
	if (v6) {
		struct ipv6hdr *ip = l3;
		const struct ipv6hdr *in = (const void *)q;

		*(__u32 *)ip = bpf_htonl(6u << 28);
		ip->payload_len = bpf_htons(sizeof(*ic) + quote);
		ip->nexthdr = IPPROTO_ICMPV6;
		ip->hop_limit = 64;
		__builtin_memcpy(&ip->saddr, &in->daddr, 16);
		__builtin_memcpy(&ip->daddr, &in->saddr, 16);
		ic->type = VC5_ICMPV6_PKT_TOOBIG;
		ic->rest = bpf_htonl(mtu);
		s += vc5_sum16((const __u8 *)&ip->saddr) + vc5_sum16((const __u8 *)&ip->daddr) +
		     bpf_htonl(sizeof(*ic) + quote) + bpf_htonl(IPPROTO_ICMPV6);
	} else {
		struct iphdr *ip = l3;
		const struct iphdr *in = (const void *)q;
		__u32 *w = l3;
		__u64 hs = 0;

		ip->version = 4;
		ip->ihl = 5;
		ip->tos = 0;
		ip->tot_len = bpf_htons(hl + sizeof(*ic) + quote);
		ip->id = 0;
		ip->frag_off = 0;
		ip->ttl = 64;
		ip->protocol = IPPROTO_ICMP;
		ip->check = 0;
		ip->saddr = in->daddr;
		ip->daddr = in->saddr;
#pragma unroll
		for (int i = 0; i < 5; i++)
			hs += w[i];
		ip->check = ~vc5_fold(hs);
		ic->type = VC5_ICMP_DEST_UNREACH;
		ic->code = VC5_ICMP_FRAG_NEEDED;
		ic->rest = bpf_htonl(mtu & 0xffff);
	}
	s += *(__u32 *)ic + ic->rest;
	ic->csum = ~vc5_fold(s);
	return vc5_count(VC5_TOO_BIG_TX, bytes, XDP_TX);
}

/* Answers a packet that would not fit its tunnel: ICMP "fragmentation
 * needed" or ICMPv6 "packet too big" from the VIP to the client, carrying
 * mtu (what fits inside the tunnel), back out the way it came. */
static __always_inline int vc5_too_big(struct xdp_md *ctx, const struct vc5_pkt *p, __u32 mtu,
				       __u64 bytes)
{
	if (p->v6)
		return vc5_too_big_af(ctx, p, mtu, bytes, 1);
	return vc5_too_big_af(ctx, p, mtu, bytes, 0);
}

/* Puts the packet of p, which starts p->l3off bytes into the frame, in the
 * tunnel of b, with a new Ethernet header to b's next hop. Returns -1 when
 * the frame is ready to leave, else the verdict of a packet answered or
 * dropped here (counted). */
static __always_inline int vc5_encap_af(struct xdp_md *ctx, const struct vc5_pkt *p,
					const struct vc5_backend *b, __u32 h, __u64 bytes,
					const int outer6)
{
	__u32 hl = outer6 ? sizeof(struct ipv6hdr) : sizeof(struct iphdr);
	__u32 extra = 0, over, len;
	__u8 proto, tos;
	void *data = (void *)(long)ctx->data;
	void *end = (void *)(long)ctx->data_end;
	/* The inner packet's own length, not the frame's (which may be padded). */
	long tail = (long)(end - data) - (long)(p->l3off + p->ip_len);
	/* The outer frame's tag, if b wants one, keeps the incoming PCP/DEI. */
	__u16 prio = b->vlan ? vc5_tag_prio(ctx, p) : 0;

	if (tail < 0)
		return vc5_count(VC5_DROP_MALFORMED, bytes, XDP_DROP);

	switch (b->tunnel) {
	case VC5_TUNNEL_IPIP:
		proto = p->v6 ? IPPROTO_IPV6 : IPPROTO_IPIP;
		break;
	case VC5_TUNNEL_GRE:
		proto = IPPROTO_GRE;
		extra = VC5_GRE_LEN;
		break;
	case VC5_TUNNEL_FOU:
		proto = IPPROTO_UDP;
		extra = VC5_UDP_LEN;
		break;
	case VC5_TUNNEL_GUE:
		proto = IPPROTO_UDP;
		extra = VC5_UDP_LEN + VC5_GUE_LEN;
		break;
	default:
		return vc5_count(VC5_DROP_MALFORMED, bytes, XDP_DROP);
	}
	over = hl + extra;
	len = p->ip_len;
	if (b->mtu && len + over > b->mtu)
		return vc5_too_big(ctx, p, b->mtu - over, bytes);
	if (tail && bpf_xdp_adjust_tail(ctx, -(int)tail))
		return vc5_count(VC5_DROP_MALFORMED, bytes, XDP_DROP);
	if (bpf_xdp_adjust_head(ctx, (int)p->l3off - (int)(ETH_HLEN + over)))
		return vc5_count(VC5_DROP_MALFORMED, bytes, XDP_DROP);
	data = (void *)(long)ctx->data;
	end = (void *)(long)ctx->data_end;

	struct ethhdr *eth = data;
	void *l3 = eth + 1;
	void *l4 = l3 + hl;
	void *inner = l4 + extra;
	const __u8 *ib = inner;

	if ((void *)(ib + sizeof(struct iphdr)) > end)
		return vc5_count(VC5_DROP_MALFORMED, bytes, XDP_DROP);
	/* DSCP and ECN: IPv4's TOS byte, or IPv6's traffic class. */
	tos = p->v6 ? (ib[0] << 4) | (ib[1] >> 4) : ib[1];

	__builtin_memcpy(eth->h_dest, b->mac, ETH_ALEN);
	__builtin_memcpy(eth->h_source, b->src_mac, ETH_ALEN);
	eth->h_proto = bpf_htons(outer6 ? ETH_P_IPV6 : ETH_P_IP);

	if (outer6) {
		struct ipv6hdr *o = l3;

		if ((void *)(o + 1) > end)
			return vc5_count(VC5_DROP_MALFORMED, bytes, XDP_DROP);
		*(__u32 *)o = bpf_htonl(6u << 28 | (__u32)tos << 20 | (h & 0xfffff));
		o->payload_len = bpf_htons(extra + len);
		o->nexthdr = proto;
		o->hop_limit = 64;
		__builtin_memcpy(&o->saddr, b->src_addr, 16);
		__builtin_memcpy(&o->daddr, b->addr, 16);
	} else {
		struct iphdr *o = l3;
		__u32 *w = l3;
		__u64 s = 0;

		if ((void *)(o + 1) > end)
			return vc5_count(VC5_DROP_MALFORMED, bytes, XDP_DROP);
		o->version = 4;
		o->ihl = 5;
		o->tos = tos;
		o->tot_len = bpf_htons(over + len);
		o->id = 0;
		o->frag_off = bpf_htons(0x4000); /* DF: the MTU was checked */
		o->ttl = 64;
		o->protocol = proto;
		o->check = 0;
		o->saddr = *(const __u32 *)(b->src_addr + 12);
		o->daddr = *(const __u32 *)(b->addr + 12);
#pragma unroll
		for (int i = 0; i < 5; i++)
			s += w[i];
		o->check = ~vc5_fold(s);
	}

	if (b->tunnel == VC5_TUNNEL_GRE) {
		__u16 *g = l4;

		if ((void *)(g + 2) > end)
			return vc5_count(VC5_DROP_MALFORMED, bytes, XDP_DROP);
		g[0] = 0;
		g[1] = bpf_htons(p->v6 ? ETH_P_IPV6 : ETH_P_IP);
	} else if (proto == IPPROTO_UDP) {
		struct udphdr *u = l4;
		__u32 gue = 0;

		if ((void *)(u + 1) > end)
			return vc5_count(VC5_DROP_MALFORMED, bytes, XDP_DROP);
		u->source = bpf_htons(0xc000 | ((h ^ (h >> 16)) & 0x3fff));
		u->dest = b->tunnel_port;
		u->len = bpf_htons(extra + len);
		u->check = 0;
		if (b->tunnel == VC5_TUNNEL_GUE) {
			__u8 *g = (void *)(u + 1);

			if ((void *)(g + VC5_GUE_LEN) > end)
				return vc5_count(VC5_DROP_MALFORMED, bytes, XDP_DROP);
			/* Version 0, no control, no options; then the
			 * protocol inside and no flags. */
			g[0] = 0;
			g[1] = p->v6 ? IPPROTO_IPV6 : IPPROTO_IPIP;
			g[2] = 0;
			g[3] = 0;
			gue = *(__u32 *)g;
		}
		if (outer6)
			u->check = vc5_udp6_check(l3, u, gue, inner, end, p);
	}
	/* The real's VLAN (vlan.h): a tag between the MACs and the EtherType.
	 * A second move of the head, so that every offset above stays a
	 * constant for the verifier. */
	if (b->vlan)
		return vc5_tag_push(ctx, b, prio, bytes);
	return -1;
}

/* vc5_encap_af for the outer family of b (see vc5_too_big). */
static __always_inline int vc5_encap(struct xdp_md *ctx, const struct vc5_pkt *p,
				     const struct vc5_backend *b, __u32 h, __u64 bytes)
{
	if (b->flags & VC5_BACKEND_OUTER6)
		return vc5_encap_af(ctx, p, b, h, bytes, 1);
	return vc5_encap_af(ctx, p, b, h, bytes, 0);
}

#endif
