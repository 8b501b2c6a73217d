package netcheck

import (
	"context"
	"net"
	"os"
	"os/exec"
	"slices"
	"syscall"
	"testing"
	"time"

	"github.com/moby/ipvs"
	"github.com/vishvananda/netlink"
	clocktesting "k8s.io/utils/clock/testing"

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
	got, err := MobyIPVS{NetNS: path}.Services(context.Background())
	if err != nil {
		t.Fatal(err)
	}
	p := ProgrammedFromIPVS(got)[false]
	if eps := p.Endpoints[p.Services["10.96.77.115/tcp/80"]]; !slices.Equal(eps, []string{"10.244.0.2:8080", "10.244.0.3:8080"}) {
		t.Fatalf("endpoints %v", eps)
	}
}

// TestPrivilegedIPVSKubeProxyNode programs, in a throwaway namespace, all
// of what kube-proxy's IPVS mode programs for the captured Services (virtual
// servers, a kube-ipvs0 dummy with the service IPs, the ipsets), runs the
// kube-proxy-rules check on it through MobyIPVS alone, then removes the
// NodePort virtual server and asserts the finding. Needs a kernel with IPVS
// and dummy links.
func TestPrivilegedIPVSKubeProxyNode(t *testing.T) {
	testnetns.RequireRoot(t)
	if _, err := os.Stat("/proc/net/ip_vs"); err != nil {
		t.Skip("this kernel has no IPVS (/proc/net/ip_vs does not exist)")
	}
	ns := testnetns.New(t)
	makeKubeIPSets(t, ns)
	want := kubeProxyIPVSState()
	dummy := &netlink.Dummy{LinkAttrs: netlink.LinkAttrs{Name: IPVSDummyDevice}}
	if err := ns.NL.LinkAdd(dummy); err != nil {
		t.Fatalf("add dummy %s: %v", IPVSDummyDevice, err)
	}
	for _, ip := range want.dummy {
		a, _ := netlink.ParseAddr(ip + "/32")
		if err := ns.NL.AddrAdd(dummy, a); err != nil {
			t.Fatal(err)
		}
	}
	path := "/run/netns/" + ns.Name
	h, err := ipvs.New(path)
	if err != nil {
		t.Fatal(err)
	}
	defer h.Close()
	for _, v := range want.vs {
		svc := v.Service
		svc.AddressFamily = syscall.AF_INET
		svc.Address = svc.Address.To4()
		if err := h.NewService(&svc); err != nil {
			t.Fatalf("virtual server %s:%d: %v", svc.Address, svc.Port, err)
		}
		for _, d := range v.Destinations {
			d.AddressFamily = syscall.AF_INET
			d.Address = d.Address.To4()
			if err := h.NewDestination(&svc, &d); err != nil {
				t.Fatal(err)
			}
		}
	}
	svcs, eps := loadAPI(t, "api-iptables.json")
	now := time.Date(2026, 11, 23, 16, 0, 0, 0, time.UTC)
	d := KubeProxyDeps{Services: fakeLister{svcs: svcs, eps: eps, node: harnessNode()}, IPVS: MobyIPVS{NetNS: path},
		KubeProxy: fakeKP{mode: "ipvs", sync: settledSync(now.Add(-time.Minute))}, Clock: clocktesting.NewFakeClock(now)}
	f, err := runDef(t, KubeProxyRules(d))
	if p := problems(f); err != nil || len(p) != 0 {
		t.Fatalf("healthy: %v %v", err, p)
	}
	np := &ipvs.Service{Address: net.ParseIP("192.0.2.10").To4(), Protocol: syscall.IPPROTO_TCP, Port: 30080, AddressFamily: syscall.AF_INET}
	if err := h.DelService(np); err != nil {
		t.Fatal(err)
	}
	f, err = runDef(t, KubeProxyRules(d))
	if err != nil || !slices.Contains(problems(f)["NodePortNotProgrammed"], "virtual server 192.0.2.10/tcp/30080 -> 10.244.0.2:8080, 10.244.0.3:8080") {
		t.Fatalf("%v %v", err, problems(f))
	}
}
