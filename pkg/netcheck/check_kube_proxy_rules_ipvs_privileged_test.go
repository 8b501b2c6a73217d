package netcheck

import (
	"github.com/node-doctor/node-doctor/pkg/kubeproxy"

	"syscall"

	"github.com/node-doctor/node-doctor/pkg/dataplane"

	"github.com/moby/ipvs"

	"context"
	"encoding/json"
	"net"
	"os"
	"path/filepath"
	"slices"
	"strings"
	"testing"
	"time"

	"github.com/vishvananda/netlink"
	"github.com/vishvananda/netlink/nl"
	"github.com/vishvananda/netns"
	"golang.org/x/sys/unix"
	clocktesting "k8s.io/utils/clock/testing"

	"github.com/node-doctor/node-doctor/internal/testnetns"
)

// makeKubeIPSets creates, in a throwaway namespace, the ipsets
// kubeProxyIPVSState lists, with the types and entries kube-proxy's IPVS
// proxier uses, plus an IPv6 set and a set that is not kube-proxy's.
func makeKubeIPSets(t *testing.T, ns *testnetns.NS) {
	t.Helper()
	if _, _, err := ns.NL.IpsetProtocol(); err != nil {
		t.Skipf("this kernel has no ipset (ip_set): %v", err)
	}
	u16 := func(v uint16) *uint16 { return &v }
	u8 := func(v uint8) *uint8 { return &v }
	entry := func(s string) *netlink.IPSetEntry {
		e := &netlink.IPSetEntry{}
		parts := strings.Split(s, ",")
		if len(parts) == 1 { // bitmap:port
			p, _ := net.LookupPort("tcp", parts[0])
			e.Port = u16(uint16(p))
			return e
		}
		e.IP = net.ParseIP(parts[0])
		proto, port, _ := strings.Cut(parts[1], ":")
		p, _ := net.LookupPort("tcp", port)
		e.Port = u16(uint16(p))
		e.Protocol = u8(map[string]uint8{"tcp": unix.IPPROTO_TCP, "udp": unix.IPPROTO_UDP, "sctp": unix.IPPROTO_SCTP}[proto])
		if len(parts) == 3 {
			e.IP2 = net.ParseIP(parts[2])
		}
		return e
	}
	sets := kubeProxyIPVSState().sets
	sets["KUBE-6-CLUSTER-IP"] = dataplane.IPSet{Type: "hash:ip,port", Entries: []string{"fd00:96::a,udp:53"}}
	sets["OTHER-SET"] = dataplane.IPSet{Type: "hash:ip,port", Entries: []string{"192.0.2.1,tcp:22"}}
	for name, s := range sets {
		opt := netlink.IpsetCreateOptions{PortFrom: 0, PortTo: 65535}
		if name == "KUBE-6-CLUSTER-IP" {
			opt.Family = unix.AF_INET6
		}
		if err := ns.NL.IpsetCreate(name, s.Type, opt); err != nil {
			t.Fatalf("create %s %s: %v", name, s.Type, err)
		}
		for _, e := range s.Entries {
			if s.Type == "bitmap:port" {
				addBitmapPort(t, ns, name, *entry(e).Port)
				continue
			}
			if err := ns.NL.IpsetAdd(name, entry(e)); err != nil {
				t.Fatalf("add %s to %s: %v", e, name, err)
			}
		}
	}
}

// addBitmapPort adds a port to a bitmap:port set. netlink's IpsetAdd always
// sends a protocol, which the kernel refuses for this set type
// (IPSET_ERR_PROTOCOL), as ipset(8) never sends one.
func addBitmapPort(t *testing.T, ns *testnetns.NS, set string, port uint16) {
	t.Helper()
	s, err := nl.GetNetlinkSocketAt(ns.Handle, netns.None(), unix.NETLINK_NETFILTER)
	if err != nil {
		t.Fatal(err)
	}
	defer s.Close()
	req := nl.NewNetlinkRequest(nl.IPSET_CMD_ADD|unix.NFNL_SUBSYS_IPSET<<8, unix.NLM_F_ACK|unix.NLM_F_EXCL)
	req.AddData(&nl.Nfgenmsg{NfgenFamily: unix.AF_INET, Version: nl.NFNETLINK_V0})
	req.AddData(nl.NewRtAttr(nl.IPSET_ATTR_PROTOCOL, nl.Uint8Attr(nl.IPSET_PROTOCOL)))
	req.AddData(nl.NewRtAttr(nl.IPSET_ATTR_SETNAME, nl.ZeroTerminated(set)))
	data := nl.NewRtAttr(nl.IPSET_ATTR_DATA|int(nl.NLA_F_NESTED), nil)
	data.AddChild(nl.NewRtAttr(int(nl.IPSET_ATTR_PORT|nl.NLA_F_NET_BYTEORDER), []byte{byte(port >> 8), byte(port)}))
	req.AddData(data)
	req.Sockets = map[int]*nl.SocketHandle{unix.NETLINK_NETFILTER: {Socket: s}}
	if _, err := req.Execute(unix.NETLINK_NETFILTER, 0); err != nil {
		t.Fatalf("add %d to %s: %v", port, set, err)
	}
}

// vsAndNode serves virtual servers from memory (this kernel has no IPVS)
// and kube-ipvs0 and the ipsets from the real kernel.
type vsAndNode struct {
	vs   fakeIPVS
	real dataplane.MobyIPVS
}

func (v vsAndNode) Services(ctx context.Context) ([]dataplane.IPVSVirtual, error) {
	return v.vs.Services(ctx)
}
func (v vsAndNode) DummyAddrs(ctx context.Context) ([]string, bool, error) {
	return v.real.DummyAddrs(ctx)
}
func (v vsAndNode) IPSets(ctx context.Context) (map[string]dataplane.IPSet, error) {
	return v.real.IPSets(ctx)
}

// TestPrivilegedIPVSNode makes kube-proxy-shaped ipsets and a kube-ipvs0
// with the service IPs (a veth: this kernel has no dummy links) in a
// throwaway namespace, reads them back over netlink, verifies the captured
// Services against them, then breaks both for real.
func TestPrivilegedIPVSNode(t *testing.T) {
	ns := testnetns.New(t)
	makeKubeIPSets(t, ns)
	want := kubeProxyIPVSState()
	link := &netlink.Veth{LinkAttrs: netlink.LinkAttrs{Name: dataplane.IPVSDummyDevice}, PeerName: "kube-ipvs0p"}
	if err := ns.NL.LinkAdd(link); err != nil {
		t.Fatal(err)
	}
	addAddr := func(ip string) {
		a, err := netlink.ParseAddr(ip + "/32")
		if err != nil {
			t.Fatal(err)
		}
		if err := ns.NL.AddrAdd(link, a); err != nil {
			t.Fatalf("add %s: %v", ip, err)
		}
	}
	for _, ip := range want.dummy {
		addAddr(ip)
	}
	real := dataplane.MobyIPVS{NetNS: "/run/netns/" + ns.Name}
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()

	addrs, ok, err := real.DummyAddrs(ctx)
	if err != nil || !ok {
		t.Fatalf("%v %v", ok, err)
	}
	if !slices.Equal(slices.Sorted(slices.Values(addrs)), slices.Sorted(slices.Values(want.dummy))) {
		t.Fatalf("kube-ipvs0 %v, want %v", addrs, want.dummy)
	}
	sets, err := real.IPSets(ctx)
	if err != nil {
		t.Fatal(err)
	}
	for name, w := range want.sets {
		g := sets[name]
		if g.Type != w.Type || !slices.Equal(slices.Sorted(slices.Values(g.Entries)), slices.Sorted(slices.Values(w.Entries))) {
			t.Errorf("%s: read %s %v, made %s %v", name, g.Type, g.Entries, w.Type, w.Entries)
		}
	}
	if _, ok := sets["OTHER-SET"]; ok {
		t.Error("a set that is not kube-proxy's was kept")
	}
	if os.Getenv("ND_WRITE_FIXTURES") != "" {
		res, err := ns.NL.IpsetListAll()
		if err != nil {
			t.Fatal(err)
		}
		slices.SortFunc(res, func(a, b netlink.IPSetResult) int { return strings.Compare(a.SetName, b.SetName) })
		b, _ := json.MarshalIndent(res, "", " ")
		_ = os.MkdirAll(filepath.Join("..", "dataplane", "testdata", "ipvs"), 0o755)
		if err := os.WriteFile(filepath.Join("..", "dataplane", "testdata", "ipvs", "ipsets-netlink.json"), append(b, '\n'), 0o644); err != nil {
			t.Fatal(err)
		}
	}

	svcs, eps := loadAPI(t, "api-iptables.json")
	now := time.Date(2026, 11, 23, 16, 0, 0, 0, time.UTC)
	d := kubeproxy.KubeProxyDeps{Services: fakeLister{svcs: svcs, eps: eps, node: harnessNode()}, IPVS: vsAndNode{vs: want.vs, real: real},
		KubeProxy: fakeKP{mode: "ipvs", sync: settledSync(now.Add(-time.Minute))}, Clock: clocktesting.NewFakeClock(now)}
	f, err := runDef(t, KubeProxyRules(d))
	if p := problems(f); err != nil || len(p) != 0 {
		t.Fatalf("healthy: %v %v", err, p)
	}

	// Break it for real: a ClusterIP unbound, a stale address, an ipset entry gone.
	a, _ := netlink.ParseAddr("10.96.77.115/32")
	if err := ns.NL.AddrDel(link, a); err != nil {
		t.Fatal(err)
	}
	addAddr("10.96.9.9")
	port := uint16(53)
	proto := uint8(unix.IPPROTO_UDP)
	if err := ns.NL.IpsetDel("KUBE-CLUSTER-IP", &netlink.IPSetEntry{IP: net.ParseIP("10.96.77.115"), Port: &port, Protocol: &proto}); err != nil {
		t.Fatal(err)
	}
	f, err = runDef(t, KubeProxyRules(d))
	if err != nil {
		t.Fatal(err)
	}
	got := problems(f)
	for reason, exp := range map[string]string{
		"ServiceIPNotBound": "10.96.77.115 on kube-ipvs0",
		"StaleServiceIP":    "no 10.96.9.9 on kube-ipvs0 (no Service has it)",
		"IPSetEntryMissing": "KUBE-CLUSTER-IP has 10.96.77.115,udp:53",
	} {
		if !slices.Contains(got[reason], exp) {
			t.Errorf("no %s %q in %v", reason, exp, got)
		}
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
	dummy := &netlink.Dummy{LinkAttrs: netlink.LinkAttrs{Name: dataplane.IPVSDummyDevice}}
	if err := ns.NL.LinkAdd(dummy); err != nil {
		t.Fatalf("add dummy %s: %v", dataplane.IPVSDummyDevice, err)
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
	d := kubeproxy.KubeProxyDeps{Services: fakeLister{svcs: svcs, eps: eps, node: harnessNode()}, IPVS: dataplane.MobyIPVS{NetNS: path},
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
