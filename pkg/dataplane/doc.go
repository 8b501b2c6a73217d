// Package dataplane reads the node's packet-filter state: iptables tables
// (iptables-nft over nf_tables netlink, iptables-save for legacy and as the
// exec fallback), nftables tables (netlink, or nft -j) and IPVS virtual
// servers, into models that hold only what the checks read. Parsers and
// decoders are pure and fuzzed; the readers stream into them.
package dataplane
