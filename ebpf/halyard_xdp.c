// SPDX-License-Identifier: (MIT OR GPL-2.0)
//
// Halyard XDP connection accounting.
//
// Runs on ingress of the interfaces the broker listens on. For TCP segments
// addressed to one of the broker's watched ports it counts, per source
// address: SYNs (SYN without ACK), packets, bytes and SYNs dropped. Totals go
// to a per-CPU array. An optional per-source SYN rate limit (fixed one-second
// window) drops SYNs above the limit, except for sources in the allow-list.
// Everything that is not such a segment (other protocols, other ports,
// non-first fragments, malformed headers) is passed on untouched.
//
// The layout of every key and value below is mirrored by
// broker/xdp/src/maps.rs; change both together. See ebpf/README.md.

#include <linux/bpf.h>
#include <linux/if_ether.h>
#include <linux/in.h>
#include <linux/ip.h>
#include <linux/ipv6.h>
#include <linux/tcp.h>
#include <bpf/bpf_helpers.h>
#include <bpf/bpf_endian.h>

// Default map sizes; the loader resizes `sources` and `syn_rate` before load
// (aya `EbpfLoader::map_max_entries`) from `xdp.max_sources`.
#define HALYARD_MAX_SOURCES 65536
// Allow-list capacity (prefixes). The loader rejects longer lists.
#define HALYARD_MAX_ALLOW 1024
// Watched destination ports (the broker's listeners).
#define HALYARD_MAX_PORTS 16
// VLAN tags skipped (802.1Q / 802.1ad, i.e. QinQ).
#define HALYARD_MAX_VLAN 2
// IPv6 extension headers skipped before giving up on a packet.
#define HALYARD_MAX_IPV6_EXT 4
// Length of the rate-limit window.
#define HALYARD_WINDOW_NS 1000000000ULL

#ifndef ETH_P_8021AD
#define ETH_P_8021AD 0x88A8
#endif

// Source address: IPv6, or IPv4 mapped as ::ffff:a.b.c.d.
struct halyard_src_key {
	__u8 addr[16];
};

// Per-source counters (one copy per CPU; userspace sums them).
struct halyard_counters {
	__u64 syn;
	__u64 packets;
	__u64 bytes;
	__u64 syn_dropped;
};

// Per-source rate-limit state, shared by all CPUs.
struct halyard_rate {
	__u64 window_start_ns;
	__u64 count;
};

// Written once by the loader before attaching.
struct halyard_config {
	__u16 ports[HALYARD_MAX_PORTS]; // host byte order; unused slots are 0
	__u32 port_count;
	__u32 syn_rate_limit; // SYNs per second per source; 0 = off
};

// LPM key: prefix length in bits (of the IPv6-mapped address) + address.
struct halyard_lpm_key {
	__u32 prefixlen;
	__u8 addr[16];
};

struct {
	__uint(type, BPF_MAP_TYPE_LRU_PERCPU_HASH);
	__uint(max_entries, HALYARD_MAX_SOURCES);
	__type(key, struct halyard_src_key);
	__type(value, struct halyard_counters);
} sources SEC(".maps");

struct {
	__uint(type, BPF_MAP_TYPE_LRU_HASH);
	__uint(max_entries, HALYARD_MAX_SOURCES);
	__type(key, struct halyard_src_key);
	__type(value, struct halyard_rate);
} syn_rate SEC(".maps");

struct {
	__uint(type, BPF_MAP_TYPE_PERCPU_ARRAY);
	__uint(max_entries, 1);
	__type(key, __u32);
	__type(value, struct halyard_counters);
} totals SEC(".maps");

struct {
	__uint(type, BPF_MAP_TYPE_ARRAY);
	__uint(max_entries, 1);
	__type(key, __u32);
	__type(value, struct halyard_config);
} config SEC(".maps");

struct {
	__uint(type, BPF_MAP_TYPE_LPM_TRIE);
	__uint(max_entries, HALYARD_MAX_ALLOW);
	__uint(map_flags, BPF_F_NO_PREALLOC);
	__type(key, struct halyard_lpm_key);
	__type(value, __u8);
} allow SEC(".maps");

struct vlan_hdr {
	__be16 tci;
	__be16 encapsulated_proto;
};

// IPv6 extension header prefix common to hop-by-hop, routing and
// destination options (length in 8-octet units, not counting the first 8).
struct ipv6_ext {
	__u8 nexthdr;
	__u8 hdrlen;
};

struct ipv6_frag {
	__u8 nexthdr;
	__u8 reserved;
	__be16 frag_off; // offset in the upper 13 bits, M flag in bit 0
	__be32 identification;
};

static __always_inline int port_watched(const struct halyard_config *cfg, __u16 port)
{
	__u32 n = cfg->port_count;

#pragma unroll
	for (int i = 0; i < HALYARD_MAX_PORTS; i++) {
		if ((__u32)i >= n)
			return 0;
		if (cfg->ports[i] == port)
			return 1;
	}
	return 0;
}

// Returns 1 when this SYN from `key` is over the per-source limit.
static __always_inline int syn_over_limit(const struct halyard_src_key *key, __u32 limit)
{
	struct halyard_lpm_key lpm = { .prefixlen = 128 };
	struct halyard_rate fresh = {};
	struct halyard_rate *st;
	__u64 now;

	__builtin_memcpy(lpm.addr, key->addr, sizeof(lpm.addr));
	if (bpf_map_lookup_elem(&allow, &lpm))
		return 0;

	now = bpf_ktime_get_ns();
	st = bpf_map_lookup_elem(&syn_rate, key);
	if (!st) {
		fresh.window_start_ns = now;
		fresh.count = 1;
		// Another CPU may have inserted meanwhile: NOEXIST keeps its state
		// and this SYN is then let through (off by one at most).
		bpf_map_update_elem(&syn_rate, key, &fresh, BPF_NOEXIST);
		return limit == 0;
	}
	if (now - st->window_start_ns >= HALYARD_WINDOW_NS) {
		// New window. Two CPUs may both reset it; that lets at most one
		// extra SYN through per CPU and window.
		st->window_start_ns = now;
		st->count = 1;
		return 0;
	}
	__sync_fetch_and_add(&st->count, 1);
	return st->count > limit;
}

static __always_inline void add_counters(struct halyard_counters *c, __u64 bytes, int syn, int dropped)
{
	c->packets += 1;
	c->bytes += bytes;
	c->syn += syn;
	c->syn_dropped += dropped;
}

// Counts one TCP segment from `key` to `dport` and applies the SYN limit.
// A global (non-static) function: the verifier checks it once, on its own,
// instead of once per parse path of the caller, which keeps verification
// cheap. Returns the XDP action.
//
// `key_in` is copied onto this function's stack first: for a global
// function's pointer argument, kernels before 6.2 (the appliance runs 6.1)
// type it as plain "mem", which they refuse as a map key.
__attribute__((noinline)) int halyard_account(struct halyard_src_key *key_in, __u32 dport,
					      __u32 syn, __u64 bytes)
{
	struct halyard_src_key k;
	struct halyard_src_key *key = &k;
	struct halyard_counters *tot, *src;
	struct halyard_config *cfg;
	__u32 zero = 0;
	int drop = 0;

	if (!key_in)
		return XDP_PASS;
	__builtin_memcpy(&k, key_in, sizeof(k));
	cfg = bpf_map_lookup_elem(&config, &zero);
	if (!cfg)
		return XDP_PASS;
	if (!port_watched(cfg, dport))
		return XDP_PASS;

	if (syn && cfg->syn_rate_limit)
		drop = syn_over_limit(key, cfg->syn_rate_limit);

	tot = bpf_map_lookup_elem(&totals, &zero);
	if (tot)
		add_counters(tot, bytes, syn, drop);

	src = bpf_map_lookup_elem(&sources, key);
	if (!src) {
		struct halyard_counters init = {};

		add_counters(&init, bytes, syn, drop);
		if (bpf_map_update_elem(&sources, key, &init, BPF_NOEXIST) == 0)
			return drop ? XDP_DROP : XDP_PASS;
		// Inserted meanwhile by another CPU (its own per-CPU copy): count
		// into the entry that now exists.
		src = bpf_map_lookup_elem(&sources, key);
	}
	if (src)
		add_counters(src, bytes, syn, drop);

	return drop ? XDP_DROP : XDP_PASS;
}

SEC("xdp")
int halyard_xdp(struct xdp_md *ctx)
{
	void *data = (void *)(long)ctx->data;
	void *data_end = (void *)(long)ctx->data_end;
	struct halyard_src_key key = {};
	struct ethhdr *eth = data;
	struct tcphdr *tcp;
	void *cursor;
	__u16 proto;

	if ((void *)(eth + 1) > data_end)
		return XDP_PASS;
	proto = eth->h_proto;
	cursor = eth + 1;

#pragma unroll
	for (int i = 0; i < HALYARD_MAX_VLAN; i++) {
		struct vlan_hdr *vh = cursor;

		if (proto != bpf_htons(ETH_P_8021Q) && proto != bpf_htons(ETH_P_8021AD))
			break;
		if ((void *)(vh + 1) > data_end)
			return XDP_PASS;
		proto = vh->encapsulated_proto;
		cursor = vh + 1;
	}

	if (proto == bpf_htons(ETH_P_IP)) {
		struct iphdr *ip = cursor;
		__u32 ihl;

		if ((void *)(ip + 1) > data_end)
			return XDP_PASS;
		if (ip->protocol != IPPROTO_TCP)
			return XDP_PASS;
		// Non-first fragments carry no TCP header.
		if (ip->frag_off & bpf_htons(0x1FFF))
			return XDP_PASS;
		ihl = ip->ihl;
		if (ihl < 5)
			return XDP_PASS;
		key.addr[10] = 0xff;
		key.addr[11] = 0xff;
		__builtin_memcpy(&key.addr[12], &ip->saddr, 4);
		cursor = (__u8 *)ip + ihl * 4;
	} else if (proto == bpf_htons(ETH_P_IPV6)) {
		struct ipv6hdr *ip6 = cursor;
		__u8 next;

		if ((void *)(ip6 + 1) > data_end)
			return XDP_PASS;
		__builtin_memcpy(key.addr, &ip6->saddr, 16);
		next = ip6->nexthdr;
		cursor = ip6 + 1;

#pragma unroll
		for (int i = 0; i < HALYARD_MAX_IPV6_EXT; i++) {
			if (next == IPPROTO_HOPOPTS || next == IPPROTO_ROUTING ||
			    next == IPPROTO_DSTOPTS) {
				struct ipv6_ext *ext = cursor;

				if ((void *)(ext + 1) > data_end)
					return XDP_PASS;
				next = ext->nexthdr;
				cursor = (__u8 *)cursor + ((__u32)ext->hdrlen + 1) * 8;
			} else if (next == IPPROTO_FRAGMENT) {
				struct ipv6_frag *frag = cursor;

				if ((void *)(frag + 1) > data_end)
					return XDP_PASS;
				if (frag->frag_off & bpf_htons(0xFFF8))
					return XDP_PASS; // non-first fragment
				next = frag->nexthdr;
				cursor = frag + 1;
			} else if (next == IPPROTO_AH) {
				struct ipv6_ext *ext = cursor;

				if ((void *)(ext + 1) > data_end)
					return XDP_PASS;
				next = ext->nexthdr;
				cursor = (__u8 *)cursor + ((__u32)ext->hdrlen + 2) * 4;
			} else {
				break;
			}
		}
		// A chain deeper than the bound also ends here (next is still an
		// extension header): not ours.
		if (next != IPPROTO_TCP)
			return XDP_PASS;
	} else {
		return XDP_PASS;
	}

	tcp = cursor;
	if ((void *)(tcp + 1) > data_end)
		return XDP_PASS;

	return halyard_account(&key, bpf_ntohs(tcp->dest), tcp->syn && !tcp->ack,
			       (__u64)(data_end - data));
}

char _license[] SEC("license") = "Dual MIT/GPL";
