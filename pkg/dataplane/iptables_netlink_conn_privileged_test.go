package dataplane

import (
	"context"
	"strings"
	"testing"

	"golang.org/x/sys/unix"

	"github.com/mdlayher/netlink"
	"github.com/node-doctor/node-doctor/internal/testnetns"
)

// TestPrivilegedNFTDumpDatagramTooLarge: a datagram larger than the read
// buffer is an error naming its size, never a silently cut message.
func TestPrivilegedNFTDumpDatagramTooLarge(t *testing.T) {
	ns := testnetns.New(t)
	restoreIn(t, ns, false, "testdata/kubeproxy/iptables-nft-nat.txt")
	c, err := dialNFTables(ns.Handle)
	if err != nil {
		t.Fatal(err)
	}
	defer c.Close()
	dump := func(buf []byte) (int, error) {
		n := 0
		err := nftDump(context.Background(), c, buf, unix.NFT_MSG_GETCHAIN, unix.NFPROTO_IPV4,
			[]netlink.Attribute{{Type: unix.NFTA_CHAIN_TABLE, Data: []byte("nat\x00")}},
			func([]byte) error { n++; return nil })
		return n, err
	}
	if n, err := dump(nil); err != nil || n == 0 {
		t.Fatalf("default buffer: %d chains, %v", n, err)
	}
	if _, err := dump(make([]byte, 64)); err == nil || !strings.Contains(err.Error(), "does not fit the 64-byte buffer") {
		t.Fatalf("64-byte buffer: err %v, want a datagram-too-large error", err)
	}
}

// BenchmarkPrivilegedNetlinkSaveSmall reads a small cluster's nat and
// filter tables (the captured kube-proxy v1.37.2 ones), what every round
// of an idle agent costs.
func BenchmarkPrivilegedNetlinkSaveSmall(b *testing.B) {
	ns := testnetns.New(b)
	restoreIn(b, ns, false, "testdata/kubeproxy/iptables-nft-nat.txt", "testdata/kubeproxy/iptables-nft-filter.txt")
	s := NetlinkIPTablesSaver{NS: ns.Handle}
	b.ReportAllocs()
	for b.Loop() {
		for _, table := range []string{"nat", "filter"} {
			if err := s.Save(context.Background(), BackendNFT, false, table, &IPTables{Tables: map[string]*IPTTable{}}); err != nil {
				b.Fatal(err)
			}
		}
	}
}
