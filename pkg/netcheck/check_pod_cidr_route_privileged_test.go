package netcheck

import (
	"context"
	"testing"
	"time"

	"github.com/node-doctor/node-doctor/internal/testnetns"
	"github.com/node-doctor/node-doctor/pkg/check"
)

// TestPrivilegedPodCIDRRoute builds a bridge/host-local node in a throwaway
// namespace (an uplink with the default route, cni0 with the pod gateway),
// breaks its pod CIDR route for real and reads it back over netlink.
func TestPrivilegedPodCIDRRoute(t *testing.T) {
	ns := testnetns.New(t)
	def := PodCIDRRoute(fakeNode{cidrs: []string{"10.244.0.0/24"}}, NetlinkRoutes{NS: ns.Handle})
	reason := func() string {
		t.Helper()
		ctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
		defer cancel()
		fs, err := def.Check.Run(ctx)
		if err != nil || len(fs) != 1 {
			t.Fatalf("%v %+v", err, fs)
		}
		t.Logf("%s: %s", fs[0].Reason, fs[0].Message)
		if fs[0].Condition != check.ConditionNetworkConfig {
			t.Errorf("condition %q", fs[0].Condition)
		}
		return fs[0].Reason
	}
	ip := func(args ...string) { ns.Exec(t, append([]string{"ip"}, args...)...) }

	ns.Exec(t, "ip", "link", "set", "lo", "up")
	ip("link", "add", "up0", "type", "veth", "peer", "name", "up0p")
	ip("link", "set", "up0", "up")
	ip("link", "set", "up0p", "up")
	ip("addr", "add", "192.0.2.2/24", "dev", "up0")
	ip("route", "add", "default", "via", "192.0.2.1", "dev", "up0")
	if got := reason(); got != "PodCIDRUnused" {
		t.Fatalf("no pod yet: %s", got)
	}

	ns.Bridge(t, "cni0", 1, true)
	ip("addr", "add", "10.244.0.1/24", "dev", "cni0")
	if got := reason(); got != "PodCIDRRouteOK" {
		t.Fatalf("healthy bridge: %s", got)
	}

	ip("route", "del", "10.244.0.0/24", "dev", "cni0")
	if got := reason(); got != "PodCIDRRouteMissing" {
		t.Fatalf("route deleted: %s", got)
	}
	ip("route", "add", "10.244.0.0/24", "dev", "up0")
	if got := reason(); got != "PodCIDRRouteWrongDevice" {
		t.Fatalf("route to the uplink: %s", got)
	}
	ip("route", "replace", "10.244.0.0/24", "dev", "cni0", "proto", "kernel", "scope", "link", "src", "10.244.0.1")
	if got := reason(); got != "PodCIDRRouteOK" {
		t.Fatalf("restored: %s", got)
	}

	// Calico's shape: a blackhole for the range, the pod on its own /32.
	ip("route", "replace", "blackhole", "10.244.0.0/24")
	ip("link", "add", "cali0", "type", "veth", "peer", "name", "cali0p")
	ip("link", "set", "cali0", "up")
	ip("route", "add", "10.244.0.7/32", "dev", "cali0")
	if got := reason(); got != "PodCIDRRouteOK" {
		t.Fatalf("blackhole + pod route: %s", got)
	}
	ip("link", "set", "cali0", "down")
	ip("route", "replace", "10.244.0.7/32", "dev", "up0")
	if got := reason(); got != "PodRouteWrongDevice" {
		t.Fatalf("pod route to the uplink: %s", got)
	}
}
