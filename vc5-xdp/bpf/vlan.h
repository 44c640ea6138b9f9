/* SPDX-License-Identifier: (GPL-2.0-only OR BSD-2-Clause) */
/*
 * The 802.1Q tag of the frame sent to a real (backend.vlan).
 *
 * Policies (README "Data plane policies"):
 * - A backend with VC5_BACKEND_VLAN sends its frames (layer 2: the
 *   client's frame with new MACs; tunnels: the outer frame) with an
 *   802.1Q tag of VID vlan, or untagged where vlan is 0. A frame that came
 *   tagged and leaves tagged keeps its tag's PCP and DEI bits, its VID
 *   replaced; one that came untagged gets PCP 0, DEI 0; a tag the real's
 *   way does not want is removed.
 * - An incoming 802.1ad (S-)tag is treated as the frame's one tag: it
 *   leaves as an 802.1Q tag (TPID 0x8100, its PCP and DEI kept) or is
 *   removed. A frame with two tags (802.1ad then 802.1Q) is not IP to vc5
 *   and passes (vc5_main).
 * - Without VC5_BACKEND_VLAN a layer-2 frame keeps its tagging as it
 *   came (reals on the ingress VLAN), byte for byte; a tunnel's outer
 *   frame is tagged only where vlan is not 0.
 * - Answers to the client (ICMP "too big", tunnel.h) keep the incoming
 *   frame's tagging: they go back the way the packet came.
 */
#ifndef VC5_VLAN_H
#define VC5_VLAN_H

#define VC5_TAG_LEN 4
#define VC5_TCI_VID 0x0fff /* the VID bits of a TCI; above them PCP and DEI */

/* The PCP and DEI bits (network order, in place) of the frame's tag, or 0
 * when the frame came untagged: what a tag the frame leaves with keeps. */
static __always_inline __u16 vc5_tag_prio(struct xdp_md *ctx, const struct vc5_pkt *p)
{
	void *data = (void *)(long)ctx->data;
	void *end = (void *)(long)ctx->data_end;
	__u16 *tci = data + 2 * ETH_ALEN + 2;

	if (p->l3off != ETH_HLEN + VC5_TAG_LEN || (void *)(tci + 1) > end)
		return 0;
	return *tci & bpf_htons(~VC5_TCI_VID & 0xffff);
}

/* Writes b's MACs, a tag of b's VID over the 4 bytes before the frame's
 * EtherType, which sits 2 * ETH_ALEN + VC5_TAG_LEN bytes in. */
static __always_inline int vc5_tag_write(struct xdp_md *ctx, const struct vc5_backend *b,
					 __u16 prio, __u64 bytes)
{
	void *data = (void *)(long)ctx->data;
	void *end = (void *)(long)ctx->data_end;
	struct ethhdr *eth = data;
	__u16 *tag = data + 2 * ETH_ALEN;

	if ((void *)(tag + 3) > end)
		return vc5_count(VC5_DROP_MALFORMED, bytes, XDP_DROP);
	__builtin_memcpy(eth->h_dest, b->mac, ETH_ALEN);
	__builtin_memcpy(eth->h_source, b->src_mac, ETH_ALEN);
	tag[0] = bpf_htons(ETH_P_8021Q);
	tag[1] = prio | bpf_htons(b->vlan & VC5_TCI_VID);
	return -1;
}

/* A frame whose Ethernet header (MACs and EtherType) starts the packet
 * gets a tag of b's VID after its MACs, and b's MACs; prio: the PCP and DEI
 * bits it keeps. -1 when done, else the verdict (counted). */
static __always_inline int vc5_tag_push(struct xdp_md *ctx, const struct vc5_backend *b,
					__u16 prio, __u64 bytes)
{
	/* The MACs are rewritten, so only the EtherType need stay in place:
	 * the 4 new bytes in front make room for the tag. */
	if (bpf_xdp_adjust_head(ctx, -VC5_TAG_LEN))
		return vc5_count(VC5_DROP_MALFORMED, bytes, XDP_DROP);
	return vc5_tag_write(ctx, b, prio, bytes);
}

/* Layer 2 with VC5_BACKEND_VLAN: b's MACs, and the frame's tag made b's
 * (rewritten, pushed or removed). -1 when done, else the verdict. */
static __always_inline int vc5_retag(struct xdp_md *ctx, const struct vc5_pkt *p,
				     const struct vc5_backend *b, __u64 bytes)
{
	void *data, *end;
	struct ethhdr *eth;

	if (p->l3off != ETH_HLEN + VC5_TAG_LEN) {
		if (b->vlan)
			return vc5_tag_push(ctx, b, 0, bytes);
	} else if (b->vlan) {
		return vc5_tag_write(ctx, b, vc5_tag_prio(ctx, p), bytes);
	} else if (bpf_xdp_adjust_head(ctx, VC5_TAG_LEN)) {
		/* Removed: the inner EtherType ends the MACs' new place. */
		return vc5_count(VC5_DROP_MALFORMED, bytes, XDP_DROP);
	}
	data = (void *)(long)ctx->data;
	end = (void *)(long)ctx->data_end;
	eth = data;
	if ((void *)(eth + 1) > end)
		return vc5_count(VC5_DROP_MALFORMED, bytes, XDP_DROP);
	__builtin_memcpy(eth->h_dest, b->mac, ETH_ALEN);
	__builtin_memcpy(eth->h_source, b->src_mac, ETH_ALEN);
	return -1;
}

#endif
