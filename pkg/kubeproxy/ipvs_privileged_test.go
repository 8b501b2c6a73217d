package kubeproxy

import (
	"github.com/node-doctor/node-doctor/pkg/dataplane"

	"context"
	"net"
	"os"
	"os/exec"
	"slices"
	"syscall"
	"testing"

	"github.com/moby/ipvs"

	"github.com/node-doctor/node-doctor/internal/testnetns"
)

// TestPrivilegedIPVS programs a virtual server the way kube-proxy's IPVS mode
// does, in a throwaway namespace, and reads it back through MobyIPVS.
func TestPrivilegedIPVS(t *testing.T) {
	testnetns.RequireRoot(t)
	if _, err := os.Stat("/proc/net/ip_vs"); err != nil {
		t.Skip("this kernel has no IPVS (/proc/net/ip_vs does not exist)")
	}
	name := "nd-ipvs-test"
	if out, err := exec.Command("ip", "netns", "add", name).CombinedOutput(); err != nil {
		t.Fatalf("ip netns add: %v: %s", err, out)
	}
	t.Cleanup(func() { _ = exec.Command("ip", "netns", "del", name).Run() })
	path := "/run/netns/" + name
	h, err := ipvs.New(path)
	if err != nil {
		t.Fatal(err)
	}
	defer h.Close()
	svc := &ipvs.Service{Address: net.ParseIP("10.96.77.115").To4(), Protocol: syscall.IPPROTO_TCP, Port: 80,
		AddressFamily: syscall.AF_INET, SchedName: "rr", Netmask: 0xffffffff}
	if err := h.NewService(svc); err != nil {
		t.Fatal(err)
	}
	for _, ip := range []string{"10.244.0.2", "10.244.0.3"} {
		d := &ipvs.Destination{Address: net.ParseIP(ip).To4(), Port: 8080, Weight: 1, AddressFamily: syscall.AF_INET}
		if err := h.NewDestination(svc, d); err != nil {
			t.Fatal(err)
		}
	}
	got, err := dataplane.MobyIPVS{NetNS: path}.Services(context.Background())
	if err != nil {
		t.Fatal(err)
	}
	p := ProgrammedFromIPVS(got)[false]
	if eps := p.Endpoints[p.Services["10.96.77.115/tcp/80"]]; !slices.Equal(eps, []string{"10.244.0.2:8080", "10.244.0.3:8080"}) {
		t.Fatalf("endpoints %v", eps)
	}
}
