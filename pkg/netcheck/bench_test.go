package netcheck

import (
	"context"
	"fmt"
	"testing"

	"github.com/vishvananda/netlink"

	"github.com/node-doctor/node-doctor/internal/testnetns"
)

// BenchmarkPrivilegedBridges lists a real bridge with 110 veth ports (a full
// node's worth of pods) in a throwaway namespace: node-doctor's two-dump
// lister against the naive one LinkGetProtinfo dump per port.
func BenchmarkPrivilegedBridges(b *testing.B) {
	ns := testnetns.New(b)
	const ports = 110
	ns.Bridge(b, "cni0", 0, false)
	br, err := ns.NL.LinkByName("cni0")
	if err != nil {
		b.Fatal(err)
	}
	for i := range ports {
		v := &netlink.Veth{LinkAttrs: netlink.LinkAttrs{Name: fmt.Sprintf("veth%03d", i), MasterIndex: br.Attrs().Index}, PeerName: fmt.Sprintf("peer%03d", i)}
		if err := ns.NL.LinkAdd(v); err != nil {
			b.Fatal(err)
		}
	}
	ctx := context.Background()

	b.Run("two-dumps", func(b *testing.B) {
		bl := NetlinkBridges{NS: ns.Handle}
		for b.Loop() {
			bs, err := bl.Bridges(ctx)
			if err != nil || len(bs[0].Ports) != ports {
				b.Fatalf("%v %d", err, len(bs))
			}
		}
	})
	b.Run("protinfo-per-port", func(b *testing.B) {
		for b.Loop() {
			links, err := ns.NL.LinkList()
			if err != nil {
				b.Fatal(err)
			}
			n := 0
			for _, l := range links {
				if l.Attrs().MasterIndex == br.Attrs().Index {
					if _, err := ns.NL.LinkGetProtinfo(l); err != nil {
						b.Fatal(err)
					}
					n++
				}
			}
			if n != ports {
				b.Fatalf("%d ports", n)
			}
		}
	})
}

func BenchmarkHairpinFindings(b *testing.B) {
	br := Bridge{Name: "cni0"}
	for i := range 110 {
		br.Ports = append(br.Ports, BridgePort{Name: fmt.Sprintf("veth%03d", i), Kind: "veth", Hairpin: i%10 != 0})
	}
	for b.Loop() {
		if _, err := hairpinFindings([]Bridge{br}); err != nil {
			b.Fatal(err)
		}
	}
}
