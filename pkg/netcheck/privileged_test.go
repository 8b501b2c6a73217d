package netcheck

import (
	"context"
	"testing"
	"time"

	"github.com/node-doctor/node-doctor/internal/testnetns"
	"github.com/node-doctor/node-doctor/pkg/check"
)

// TestPrivilegedNetlinkBridges reads a real bridge with real veth ports in a
// throwaway namespace, flips hairpin and promiscuous mode for real, and runs
// the hairpin check on what netlink reports.
func TestPrivilegedNetlinkBridges(t *testing.T) {
	ns := testnetns.New(t)
	ports := ns.Bridge(t, "cni0", 3, true)
	ns.Bridge(t, "br-empty", 0, false)
	bl := NetlinkBridges{NS: ns.Handle}
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()

	bs, err := bl.Bridges(ctx)
	if err != nil {
		t.Fatal(err)
	}
	if len(bs) != 2 {
		t.Fatalf("got %d bridges, want 2: %+v", len(bs), bs)
	}
	var br Bridge
	for _, b := range bs {
		if b.Name == "cni0" {
			br = b
		}
	}
	if !br.Up || br.Promisc || len(br.PodPorts()) != 3 {
		t.Fatalf("cni0 = %+v", br)
	}
	for _, p := range br.PodPorts() {
		if !p.Hairpin {
			t.Errorf("port %s: hairpin off, set on", p.Name)
		}
	}

	hp := Hairpin(bl)
	if r := run(t, hp); r.Status != check.StatusOK || reasons(r) != "ok:HairpinEnabled" {
		t.Fatalf("all ports hairpin: %s %s %v", r.Status, reasons(r), r.Err)
	}

	ns.SetHairpin(t, ports[1], false)
	r := run(t, hp)
	if r.Status != check.StatusProblem || r.Findings[0].Details["ports"] != ports[1] {
		t.Fatalf("one port off: %s %s %v", r.Status, reasons(r), r.Findings)
	}

	ns.SetPromisc(t, "cni0", true)
	if r := run(t, hp); r.Status != check.StatusOK || reasons(r) != "ok:BridgePromiscuous" {
		t.Fatalf("promiscuous bridge: %s %s", r.Status, reasons(r))
	}
	ns.SetPromisc(t, "cni0", false)
	ns.SetHairpin(t, ports[1], true)
	if r := run(t, hp); r.Status != check.StatusOK {
		t.Fatalf("restored: %s %s", r.Status, reasons(r))
	}
}

// TestPrivilegedNetlinkNoBridges: an empty namespace has no bridge, so the
// bridge checks do not apply.
func TestPrivilegedNetlinkNoBridges(t *testing.T) {
	ns := testnetns.New(t)
	bl := NetlinkBridges{NS: ns.Handle}
	if r := run(t, Hairpin(bl)); r.Status != check.StatusNotApplicable {
		t.Fatalf("hairpin in empty netns: %s %v", r.Status, r.Err)
	}
}
