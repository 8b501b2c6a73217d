package kubeproxy

import (
	"github.com/node-doctor/node-doctor/pkg/dataplane"

	"bufio"
	"bytes"
	"context"
	"fmt"
	"io"
	"net/netip"
	"os"
	"os/exec"
	"reflect"
	"runtime"
	"strings"
	"syscall"
	"testing"
	"time"

	corev1 "k8s.io/api/core/v1"
	discoveryv1 "k8s.io/api/discovery/v1"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"

	"github.com/node-doctor/node-doctor/internal/testnetns"
)

// genKubeProxy writes iptables-save nat output shaped like kube-proxy's
// (iptables mode, v1.37) for n ClusterIP Services with eps endpoints each,
// and returns the matching Services and EndpointSlices.
func genKubeProxy(w io.Writer, n, eps int) ([]*corev1.Service, []*discoveryv1.EndpointSlice) {
	bw := bufio.NewWriterSize(w, 1<<20)
	defer bw.Flush()
	svcBase := netip.MustParseAddr("10.96.0.10").As4()
	podBase := netip.MustParseAddr("10.128.0.0").As4()
	addr := func(b [4]byte, off int) string {
		v := uint32(b[0])<<24 | uint32(b[1])<<16 | uint32(b[2])<<8 | uint32(b[3])
		v += uint32(off)
		return fmt.Sprintf("%d.%d.%d.%d", v>>24, v>>16&255, v>>8&255, v&255)
	}
	var svcs []*corev1.Service
	var slices []*discoveryv1.EndpointSlice
	type svcRules struct {
		spn       ServicePortName
		ip        string
		chain     string
		endpoints []string
	}
	all := make([]svcRules, 0, n)
	tcp := corev1.ProtocolTCP
	for i := 0; i < n; i++ {
		spn := ServicePortName{Namespace: fmt.Sprintf("ns-%d", i/100), Name: fmt.Sprintf("svc-%d", i), Port: "http", Protocol: "tcp"}
		r := svcRules{spn: spn, ip: addr(svcBase, i), chain: IPTablesChainsFor(spn).SVC}
		sl := &discoveryv1.EndpointSlice{ObjectMeta: metav1.ObjectMeta{Namespace: spn.Namespace, Name: spn.Name + "-x",
			Labels: map[string]string{discoveryv1.LabelServiceName: spn.Name}}, AddressType: discoveryv1.AddressTypeIPv4}
		name, port := "http", int32(8080)
		sl.Ports = []discoveryv1.EndpointPort{{Name: &name, Port: &port, Protocol: &tcp}}
		for j := 0; j < eps; j++ {
			ip := addr(podBase, i*eps+j)
			r.endpoints = append(r.endpoints, ip+":8080")
			sl.Endpoints = append(sl.Endpoints, discoveryv1.Endpoint{Addresses: []string{ip}})
		}
		all = append(all, r)
		svcs = append(svcs, &corev1.Service{ObjectMeta: metav1.ObjectMeta{Namespace: spn.Namespace, Name: spn.Name},
			Spec: corev1.ServiceSpec{Type: corev1.ServiceTypeClusterIP, ClusterIP: r.ip, ClusterIPs: []string{r.ip},
				Ports: []corev1.ServicePort{{Name: "http", Port: 80, Protocol: tcp}}}})
		slices = append(slices, sl)
	}
	fmt.Fprintln(bw, "*nat\n:PREROUTING ACCEPT [0:0]\n:INPUT ACCEPT [0:0]\n:OUTPUT ACCEPT [0:0]\n:POSTROUTING ACCEPT [0:0]\n:KUBE-MARK-MASQ - [0:0]\n:KUBE-NODEPORTS - [0:0]\n:KUBE-POSTROUTING - [0:0]\n:KUBE-SERVICES - [0:0]")
	for _, r := range all {
		fmt.Fprintf(bw, ":%s - [0:0]\n", r.chain)
		for _, e := range r.endpoints {
			fmt.Fprintf(bw, ":%s - [0:0]\n", IPTablesEndpointChain(r.spn, e))
		}
	}
	fmt.Fprintln(bw, `-A PREROUTING -m comment --comment "kubernetes service portals" -j KUBE-SERVICES`)
	fmt.Fprintln(bw, `-A OUTPUT -m comment --comment "kubernetes service portals" -j KUBE-SERVICES`)
	fmt.Fprintln(bw, `-A KUBE-MARK-MASQ -j MARK --set-xmark 0x4000/0x4000`)
	for _, r := range all {
		fmt.Fprintf(bw, "-A KUBE-SERVICES -d %s/32 -p tcp -m comment --comment \"%s cluster IP\" -m tcp --dport 80 -j %s\n", r.ip, r.spn, r.chain)
	}
	for _, r := range all {
		fmt.Fprintf(bw, "-A %s ! -s 10.128.0.0/9 -d %s/32 -p tcp -m comment --comment \"%s cluster IP\" -m tcp --dport 80 -j KUBE-MARK-MASQ\n", r.chain, r.ip, r.spn)
		for j, e := range r.endpoints {
			sep := IPTablesEndpointChain(r.spn, e)
			if left := len(r.endpoints) - j; left > 1 {
				fmt.Fprintf(bw, "-A %s -m comment --comment \"%s -> %s\" -m statistic --mode random --probability %.11f -j %s\n", r.chain, r.spn, e, 1/float64(left), sep)
			} else {
				fmt.Fprintf(bw, "-A %s -m comment --comment \"%s -> %s\" -j %s\n", r.chain, r.spn, e, sep)
			}
			ip, _, _ := strings.Cut(e, ":")
			fmt.Fprintf(bw, "-A %s -s %s/32 -m comment --comment \"%s\" -j KUBE-MARK-MASQ\n", sep, ip, r.spn)
			fmt.Fprintf(bw, "-A %s -p tcp -m comment --comment \"%s\" -m tcp -j DNAT --to-destination %s\n", sep, r.spn, e)
		}
	}
	fmt.Fprintln(bw, "COMMIT")
	return svcs, slices
}

func TestGeneratedRulesVerifyClean(t *testing.T) {
	var buf bytes.Buffer
	svcs, eps := genKubeProxy(&buf, 50, 5)
	ipt, err := dataplane.ParseIPTablesSave(&buf)
	if err != nil {
		t.Fatal(err)
	}
	disc, verified, _ := Compare(DesiredServicePorts(svcs, eps, "n"), ProgrammedFromIPTables(ipt))
	if len(disc) != 0 || verified != 50 {
		t.Fatalf("verified %d, %v", verified, disc)
	}
}

// streamIPTables is what the kube-proxy-rules check does with a dump: rules
// go into the collector as they are read.
func streamIPTables(data []byte) (*Programmed, error) {
	col := newIPTCollector()
	ipt := &dataplane.IPTables{Tables: map[string]*dataplane.IPTTable{}, Rules: col.rule}
	if err := dataplane.ParseIPTablesSaveInto(bytes.NewReader(data), ipt); err != nil {
		return nil, err
	}
	return col.finish(ipt.Table("nat")), nil
}

func TestStreamedAndStoredIPTablesAgree(t *testing.T) {
	var buf bytes.Buffer
	genKubeProxy(&buf, 300, 3)
	// A stale DNAT and a jump to a chain that is not there, so the
	// comparison has more than the happy path to agree on.
	data := strings.Replace(buf.String(), "COMMIT\n",
		":KUBE-SEP-STALE000000000000 - [0:0]\n-A KUBE-SEP-STALE000000000000 -p tcp -m comment --comment \"gone/x:http\" -j DNAT --to-destination 10.9.9.9:80\n"+
			"-A KUBE-SVC-GONE000000000000 -m comment --comment \"gone/x:http -> 10.9.9.9:80\" -j KUBE-SEP-MISSING00000000000\nCOMMIT\n", 1)
	stored, err := dataplane.ParseIPTablesSave(strings.NewReader(data))
	if err != nil {
		t.Fatal(err)
	}
	streamed, err := streamIPTables([]byte(data))
	if err != nil {
		t.Fatal(err)
	}
	want := ProgrammedFromIPTables(stored)
	if !reflect.DeepEqual(want, streamed) {
		t.Fatalf("streamed and stored differ:\nstored   %d services, %d chains, %d rules\nstreamed %d services, %d chains, %d rules",
			len(want.Services), len(want.ServiceChains), want.Rules, len(streamed.Services), len(streamed.ServiceChains), streamed.Rules)
	}
	if got := want.Endpoints["KUBE-SVC-GONE000000000000"]; len(got) != 1 || got[0] != "missing chain KUBE-SEP-MISSING00000000000" {
		t.Fatalf("endpoints of the broken chain: %v", got)
	}
	if want.ServiceChains["KUBE-SEP-STALE000000000000"] != "gone/x:http" {
		t.Fatalf("owner of the stale chain: %q", want.ServiceChains["KUBE-SEP-STALE000000000000"])
	}
}

// retainedMiB is the heap f's result keeps alive.
func retainedMiB(f func() any) float64 {
	var m0, m1 runtime.MemStats
	runtime.GC()
	runtime.ReadMemStats(&m0)
	v := f()
	runtime.GC()
	runtime.ReadMemStats(&m1)
	runtime.KeepAlive(v)
	return float64(int64(m1.HeapAlloc)-int64(m0.HeapAlloc)) / (1 << 20)
}

// BenchmarkVerifyIPTables10k: read + compare of 10,000 Services x 5
// endpoints from generated iptables-save text (no exec). "streamed" is the
// check's way; "stored" keeps every rule (IPTables as parsed). retained-MiB
// is what the rules read hold while the comparison runs.
func BenchmarkVerifyIPTables10k(b *testing.B) {
	var buf bytes.Buffer
	svcs, eps := genKubeProxy(&buf, 10000, 5)
	data := buf.Bytes()
	read := map[string]func() (*Programmed, any, error){
		"streamed": func() (*Programmed, any, error) {
			p, err := streamIPTables(data)
			return p, p, err
		},
		"stored": func() (*Programmed, any, error) {
			ipt, err := dataplane.ParseIPTablesSave(bytes.NewReader(data))
			if err != nil {
				return nil, nil, err
			}
			return ProgrammedFromIPTables(ipt), ipt, nil
		},
	}
	for _, name := range []string{"streamed", "stored"} {
		b.Run(name, func(b *testing.B) {
			b.SetBytes(int64(len(data)))
			b.ReportAllocs()
			retained := retainedMiB(func() any {
				p, held, err := read[name]()
				if err != nil {
					b.Fatal(err)
				}
				return []any{p, held}
			})
			for b.Loop() {
				p, _, err := read[name]()
				if err != nil {
					b.Fatal(err)
				}
				disc, _, _ := Compare(DesiredServicePorts(svcs, eps, "n"), p)
				if len(disc) != 0 {
					b.Fatalf("%d discrepancies, first %+v", len(disc), disc[0])
				}
			}
			// After the loop: b.Loop resets reported metrics when it starts.
			b.ReportMetric(retained, "retained-MiB")
		})
	}
}

// TestPrivilegedScaleIPTables loads the generated 10,000-Service ruleset
// into a throwaway namespace's iptables-nft and times, on the same rules:
// iptables-save alone, node-doctor's read+parse+compare, and the naive
// one-list-per-chain approach (sampled). Run with -v to see the figures:
//
//	ND_SCALE=1 go test ./pkg/netcheck -run TestPrivilegedScaleIPTables -v
func TestPrivilegedScaleIPTables(t *testing.T) {
	if os.Getenv("ND_SCALE") == "" {
		t.Skip("scale test (about a minute): set ND_SCALE=1")
	}
	testnetns.RequireRoot(t)
	// Own name: something on this machine removes nd-test-* namespaces of
	// other runs.
	ns := struct{ Name string }{fmt.Sprintf("nd-dpscale-%d", time.Now().UnixNano()%1e6)}
	if out, err := exec.Command("ip", "netns", "add", ns.Name).CombinedOutput(); err != nil {
		t.Fatalf("ip netns add: %v: %s", err, out)
	}
	t.Cleanup(func() { _ = exec.Command("ip", "netns", "del", ns.Name).Run() })
	var buf bytes.Buffer
	svcs, eps := genKubeProxy(&buf, 10000, 5)
	load := exec.Command("ip", "netns", "exec", ns.Name, "iptables-nft-restore")
	load.Stdin = bytes.NewReader(buf.Bytes())
	if out, err := load.CombinedOutput(); err != nil {
		t.Fatalf("load rules: %v: %s", err, out)
	}
	ctx := context.Background()
	prefix := []string{"ip", "netns", "exec", ns.Name}
	best := func(n int, f func()) time.Duration {
		var m time.Duration
		for i := 0; i < n; i++ {
			s := time.Now()
			f()
			if d := time.Since(s); i == 0 || d < m {
				m = d
			}
		}
		return m
	}
	saveOnly := best(3, func() {
		cmd := exec.Command("ip", "netns", "exec", ns.Name, "iptables-nft-save", "-t", "nat")
		cmd.Stdout = io.Discard
		if err := cmd.Run(); err != nil {
			t.Fatal(err)
		}
	})
	verify := best(3, func() {
		col := newIPTCollector()
		ipt := &dataplane.IPTables{Tables: map[string]*dataplane.IPTTable{}, Rules: col.rule}
		if err := (dataplane.ExecIPTablesSaver{Prefix: prefix}).Save(ctx, dataplane.BackendNFT, false, "nat", ipt); err != nil {
			t.Fatal(err)
		}
		disc, verified, _ := Compare(DesiredServicePorts(svcs, eps, "n"), col.finish(ipt.Table("nat")))
		if len(disc) != 0 || verified != 10000 {
			t.Fatalf("verified %d, %d discrepancies", verified, len(disc))
		}
	})
	// Naive: one `iptables -S CHAIN` per chain (what go-iptables List does),
	// sampled on 50 chains and scaled to all 60,000.
	const sample = 50
	naive := best(1, func() {
		for i := 0; i < sample; i++ {
			chain := IPTablesChainsFor(ServicePortName{Namespace: fmt.Sprintf("ns-%d", i/100), Name: fmt.Sprintf("svc-%d", i), Port: "http", Protocol: "tcp"}).SVC
			if out, err := exec.Command("ip", "netns", "exec", ns.Name, "iptables-nft", "-t", "nat", "-S", chain).CombinedOutput(); err != nil {
				t.Fatalf("%v: %s", err, out)
			}
		}
	})
	naiveAll := naive / sample * 60000
	var ru syscall.Rusage
	_ = syscall.Getrusage(syscall.RUSAGE_SELF, &ru)
	t.Logf("rules: %d bytes of iptables-save nat, 10000 services x 5 endpoints (60,000 chains, 170,000 rules)", buf.Len())
	t.Logf("iptables-save -t nat alone: %s", saveOnly)
	t.Logf("node-doctor read+parse+compare: %s (%.2fx iptables-save)", verify, float64(verify)/float64(saveOnly))
	t.Logf("naive one list per chain: %s for %d chains, ~%s for all 60,000 (%.0fx node-doctor)", naive, sample, naiveAll.Round(time.Second), float64(naiveAll)/float64(verify))
	t.Logf("test process peak RSS: %d MiB", ru.Maxrss/1024)
}
