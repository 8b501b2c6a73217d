package kubeproxy

import (
	"github.com/node-doctor/node-doctor/pkg/dataplane"

	"slices"

	"bufio"
	"context"
	"fmt"
	"io"
	"os"
	"os/exec"
	"path/filepath"
	"reflect"
	"strings"
	"testing"
	"time"

	"github.com/vishvananda/netns"

	corev1 "k8s.io/api/core/v1"
	discoveryv1 "k8s.io/api/discovery/v1"
)

// genNFTKubeProxy writes an nft ruleset shaped like kube-proxy v1.37's
// nftables mode for the Services and EndpointSlices genKubeProxy makes:
// service-ips, cluster-ips, service-nodeports, no-endpoint-services, the
// fixed chains, and one service chain per port with a numgen DNAT map.
func genNFTKubeProxy(w io.Writer, svcs []*corev1.Service, slices []*discoveryv1.EndpointSlice) {
	bw := bufio.NewWriterSize(w, 1<<20)
	defer bw.Flush()
	fmt.Fprintln(bw, "table ip kube-proxy {\n\tcomment \"rules for kube-proxy\"")
	fmt.Fprintln(bw, "\tset cluster-ips {\n\t\ttype ipv4_addr\n\t\tcomment \"Active ClusterIPs\"\n\t\telements = {")
	for i, s := range svcs {
		fmt.Fprintf(bw, "\t\t\t%s%s\n", s.Spec.ClusterIP, sep(i, len(svcs)))
	}
	fmt.Fprintln(bw, "\t\t}\n\t}")
	fmt.Fprintln(bw, "\tset nodeport-ips {\n\t\ttype ipv4_addr\n\t\telements = { 198.51.100.10 }\n\t}")
	fmt.Fprintln(bw, "\tchain reject-chain {\n\t\treject\n\t}")
	fmt.Fprintln(bw, "\tmap no-endpoint-services {\n\t\ttype ipv4_addr . inet_proto . inet_service : verdict\n\t\telements = { 10.95.0.1 . tcp . 80 comment \"dp/empty:http\" : goto reject-chain }\n\t}")
	fmt.Fprintln(bw, "\tmap no-endpoint-nodeports {\n\t\ttype inet_proto . inet_service : verdict\n\t}")
	fmt.Fprintln(bw, "\tmap firewall-ips {\n\t\ttype ipv4_addr . inet_proto . inet_service : verdict\n\t}")
	chains := make([]string, len(svcs))
	for i, s := range svcs {
		chains[i] = NFTablesChainsFor(ServicePortName{Namespace: s.Namespace, Name: s.Name, Port: "http", Protocol: "tcp"}).Service
		fmt.Fprintf(bw, "\tchain %s {\n\t\tip daddr %s tcp dport 80 ip saddr != 10.128.0.0/9 jump mark-for-masquerade\n\t\tmeta l4proto tcp dnat ip to numgen random mod %d map { ",
			chains[i], s.Spec.ClusterIP, len(slices[i].Endpoints))
		for j, e := range slices[i].Endpoints {
			fmt.Fprintf(bw, "%d : %s . 8080%s", j, e.Addresses[0], sep(j, len(slices[i].Endpoints)))
		}
		fmt.Fprintln(bw, " }\n\t}")
	}
	fmt.Fprintln(bw, "\tmap service-ips {\n\t\ttype ipv4_addr . inet_proto . inet_service : verdict\n\t\tcomment \"ClusterIP, ExternalIP and LoadBalancer IP traffic\"\n\t\telements = {")
	for i, s := range svcs {
		fmt.Fprintf(bw, "\t\t\t%s . tcp . 80 : goto %s%s\n", s.Spec.ClusterIP, chains[i], sep(i, len(svcs)))
	}
	fmt.Fprintln(bw, "\t\t}\n\t}")
	fmt.Fprintln(bw, "\tmap service-nodeports {\n\t\ttype inet_proto . inet_service : verdict\n\t\telements = {")
	for i := range min(len(svcs), 1000) {
		fmt.Fprintf(bw, "\t\t\ttcp . %d : goto %s%s\n", 30000+i, chains[i], sep(i, min(len(svcs), 1000)))
	}
	fmt.Fprintln(bw, "\t\t}\n\t}")
	fmt.Fprint(bw, `	chain mark-for-masquerade {
		meta mark set meta mark | 0x00004000
	}
	chain masquerading {
		meta mark & 0x00004000 == 0x00000000 return
		meta mark set meta mark ^ 0x00004000
		masquerade fully-random
	}
	chain services {
		ip daddr . meta l4proto . th dport vmap @service-ips
		ip daddr @nodeport-ips meta l4proto . th dport vmap @service-nodeports
	}
	chain service-endpoints-check {
		ip daddr . meta l4proto . th dport vmap @no-endpoint-services
	}
	chain cluster-ips-check {
		ip daddr @cluster-ips reject comment "Reject traffic to invalid ports of ClusterIPs"
		ip daddr 10.96.0.0/12 drop comment "Drop traffic to unallocated ClusterIPs"
	}
	chain filter-forward {
		type filter hook forward priority filter; policy accept;
		ct state new jump service-endpoints-check
		ct state new jump cluster-ips-check
	}
	chain nat-prerouting {
		type nat hook prerouting priority dstnat; policy accept;
		jump services
	}
	chain nat-output {
		type nat hook output priority -100; policy accept;
		jump services
	}
	chain nat-postrouting {
		type nat hook postrouting priority srcnat; policy accept;
		jump masquerading
	}
}
`)
}

func sep(i, n int) string {
	if i < n-1 {
		return ","
	}
	return ""
}

// scaleNFTNS loads n generated Services (5 endpoints each) into a
// namespace of its own name and returns the name and an open handle.
func scaleNFTNS(tb testing.TB, n int) (string, netns.NsHandle, []*corev1.Service, []*discoveryv1.EndpointSlice) {
	tb.Helper()
	if os.Geteuid() != 0 {
		tb.Skip("privileged: needs root to create a network namespace (CI runs it as root)")
	}
	name := fmt.Sprintf("nd-nftscale-%d", time.Now().UnixNano()%1e6)
	if out, err := exec.Command("ip", "netns", "add", name).CombinedOutput(); err != nil {
		tb.Fatalf("ip netns add: %v: %s", err, out)
	}
	tb.Cleanup(func() { _ = exec.Command("ip", "netns", "del", name).Run() })
	h, err := netns.GetFromName(name)
	if err != nil {
		tb.Fatal(err)
	}
	tb.Cleanup(func() { h.Close() })
	svcs, eps := genKubeProxy(io.Discard, n, 5)
	p := filepath.Join(tb.TempDir(), "kube-proxy.nft")
	f, err := os.Create(p)
	if err != nil {
		tb.Fatal(err)
	}
	genNFTKubeProxy(f, svcs, eps)
	if err := f.Close(); err != nil {
		tb.Fatal(err)
	}
	if out, err := exec.Command("ip", "netns", "exec", name, "nft", "-f", p).CombinedOutput(); err != nil {
		tb.Fatalf("nft -f: %v: %s", err, out)
	}
	return name, h, svcs, eps
}

// BenchmarkPrivilegedNFTRead10k reads a 10,000-Service kube-proxy table in
// a throwaway namespace over netlink and with nft -j (the agent's side of
// it: nft's own CPU and memory are not in the allocation figures, only in
// the time). Both must give the same table, which verifies clean.
//
//	go test ./pkg/netcheck -run '^$' -bench PrivilegedNFTRead10k -benchmem -benchtime 5x
func BenchmarkPrivilegedNFTRead10k(b *testing.B) {
	name, h, svcs, eps := scaleNFTNS(b, 10000)
	ctx := context.Background()
	readers := []struct {
		name string
		r    dataplane.NFTLister
	}{{"netlink", dataplane.NetlinkNFT{NS: h}}, {"nft-json", dataplane.ExecNFT{Prefix: []string{"ip", "netns", "exec", name}}}}
	var tables []*dataplane.NFTTable
	for _, rd := range readers {
		t := dataplane.NewNFTTable()
		if ok, err := rd.r.ListTable(ctx, "ip", "kube-proxy", t); err != nil || !ok {
			b.Fatalf("%s: %v %v", rd.name, ok, err)
		}
		tables = append(tables, sortedNFT(t))
	}
	if !reflect.DeepEqual(tables[0], tables[1]) {
		b.Fatalf("netlink and nft -j read different tables (%d and %d chains)", len(tables[0].Chains), len(tables[1].Chains))
	}
	disc, verified, _ := Compare(DesiredServicePorts(svcs, eps, "node"), ProgrammedFromNFT(tables[0]))
	if verified != len(svcs) {
		b.Fatalf("verified %d of %d: %d differences, e.g. %+v", verified, len(svcs), len(disc), disc[:min(len(disc), 1)])
	}
	for _, rd := range readers {
		b.Run(rd.name, func(b *testing.B) {
			b.ReportAllocs()
			for b.Loop() {
				t := dataplane.NewNFTTable()
				if ok, err := rd.r.ListTable(ctx, "ip", "kube-proxy", t); err != nil || !ok || len(t.Chains) < 10000 {
					b.Fatalf("%v %v %d", ok, err, len(t.Chains))
				}
			}
		})
	}
	b.Run("nft-alone", func(b *testing.B) { // the yardstick: nft -j to /dev/null
		for b.Loop() {
			cmd := exec.Command("ip", "netns", "exec", name, "nft", "-j", "list", "table", "ip", "kube-proxy")
			cmd.Stdout = io.Discard
			if err := cmd.Run(); err != nil {
				b.Fatal(err)
			}
		}
	})
}

// TestPrivilegedNFTNetlinkScale is the differential test at 1,000 Services:
// the same table from both readers, and a clean comparison; then one
// cluster-ips element deleted, which is found.
func TestPrivilegedNFTNetlinkScale(t *testing.T) {
	name, h, svcs, eps := scaleNFTNS(t, 1000)
	ctx := context.Background()
	e, n := dataplane.NewNFTTable(), dataplane.NewNFTTable()
	if _, err := (dataplane.ExecNFT{Prefix: []string{"ip", "netns", "exec", name}}).ListTable(ctx, "ip", "kube-proxy", e); err != nil {
		t.Fatal(err)
	}
	if _, err := (dataplane.NetlinkNFT{NS: h}).ListTable(ctx, "ip", "kube-proxy", n); err != nil {
		t.Fatal(err)
	}
	diffNFT(t, "1,000 services", sortedNFT(e), sortedNFT(n))
	disc, verified, _ := Compare(DesiredServicePorts(svcs, eps, "node"), ProgrammedFromNFT(n))
	if verified != len(svcs) || len(disc) != 0 {
		t.Fatalf("verified %d of %d: %+v", verified, len(svcs), disc[:min(len(disc), 3)])
	}
	if !strings.HasPrefix(n.Chains[NFTablesChainsFor(ServicePortName{Namespace: svcs[0].Namespace, Name: svcs[0].Name, Port: "http", Protocol: "tcp"}).Service].DNAT[0], "10.128.") {
		t.Fatal("service chain without its endpoints")
	}
	// Break: one ClusterIP deleted from cluster-ips, as kube-proxy would
	// have it when a sync went wrong. Both readers see it; it is found.
	gone := svcs[7].Spec.ClusterIP
	if out, err := exec.Command("ip", "netns", "exec", name, "nft", "delete", "element", "ip", "kube-proxy", "cluster-ips", "{ "+gone+" }").CombinedOutput(); err != nil {
		t.Fatalf("nft delete element: %v: %s", err, out)
	}
	e, n = dataplane.NewNFTTable(), dataplane.NewNFTTable()
	if _, err := (dataplane.ExecNFT{Prefix: []string{"ip", "netns", "exec", name}}).ListTable(ctx, "ip", "kube-proxy", e); err != nil {
		t.Fatal(err)
	}
	if _, err := (dataplane.NetlinkNFT{NS: h}).ListTable(ctx, "ip", "kube-proxy", n); err != nil {
		t.Fatal(err)
	}
	diffNFT(t, "cluster-ips element deleted", sortedNFT(e), sortedNFT(n))
	disc, verified, _ = Compare(DesiredServicePorts(svcs, eps, "node"), ProgrammedFromNFT(n))
	if len(disc) != 1 || disc[0].Reason != "ClusterIPNotInSet" || disc[0].Service.Name != svcs[7].Name || !strings.Contains(disc[0].Expected, gone) || verified != len(svcs)-1 {
		t.Fatalf("cluster-ips element deleted: verified %d, %+v", verified, disc)
	}
}

// sortedNFT orders what neither reader promises an order for (set
// elements, the values of a numgen map).
func sortedNFT(t *dataplane.NFTTable) *dataplane.NFTTable {
	for _, c := range t.Chains {
		slices.Sort(c.DNAT)
	}
	for _, m := range t.Maps {
		slices.SortFunc(m.Elements, func(a, b dataplane.NFTElement) int {
			return strings.Compare(strings.Join(a.Key, " "), strings.Join(b.Key, " "))
		})
	}
	for _, st := range t.Sets {
		slices.SortFunc(st.Elements, func(a, b dataplane.NFTElement) int {
			return strings.Compare(strings.Join(a.Key, " "), strings.Join(b.Key, " "))
		})
	}
	return t
}

func diffNFT(t *testing.T, what string, exec, native *dataplane.NFTTable) {
	t.Helper()
	if len(native.Unknown) > 0 {
		t.Errorf("%s: netlink reader did not understand %d parts, e.g. %+v", what, len(native.Unknown), native.Unknown[0])
	}
	if !reflect.DeepEqual(exec, native) {
		for name, c := range exec.Chains {
			if !reflect.DeepEqual(c, native.Chains[name]) {
				t.Errorf("%s: chain %s: nft -j %+v, netlink %+v", what, name, c, native.Chains[name])
			}
		}
		for name := range native.Chains {
			if exec.Chains[name] == nil {
				t.Errorf("%s: chain %s only over netlink", what, name)
			}
		}
		for name, m := range exec.Maps {
			if !reflect.DeepEqual(m, native.Maps[name]) {
				t.Errorf("%s: map %s: nft -j %+v, netlink %+v", what, name, m, native.Maps[name])
			}
		}
		for name := range native.Maps {
			if exec.Maps[name] == nil {
				t.Errorf("%s: map %s only over netlink", what, name)
			}
		}
		for name, st := range exec.Sets {
			if !reflect.DeepEqual(st, native.Sets[name]) {
				t.Errorf("%s: set %s: nft -j %+v, netlink %+v", what, name, st, native.Sets[name])
			}
		}
		for name := range native.Sets {
			if exec.Sets[name] == nil {
				t.Errorf("%s: set %s only over netlink", what, name)
			}
		}
		if exec.Family != native.Family || exec.Name != native.Name {
			t.Errorf("%s: table %s %s vs %s %s", what, exec.Family, exec.Name, native.Family, native.Name)
		}
	}
}
