package netcheck

import (
	"github.com/node-doctor/node-doctor/pkg/kubeproxy"

	"context"
	"errors"
	"fmt"
	"net/netip"
	"os"
	"path/filepath"
	"slices"
	"strings"
	"syscall"
	"testing"
	"testing/fstest"

	corev1 "k8s.io/api/core/v1"

	"github.com/node-doctor/node-doctor/pkg/check"
)

func TestParseCNIRanges(t *testing.T) {
	for file, want := range map[string]string{
		"bridge-dualstack.conflist": "10.244.1.0/24,fd00:10:244:1::/64",
		"bridge-ipv4.conflist":      "10.244.1.0/24",
		"bridge-subnet.conf":        "10.22.0.0/16",
		"calico.conflist":           "", // calico-ipam keeps its pools in the datastore
		"flannel.conflist":          "", // flannel writes its subnet at run time
	} {
		b, err := os.ReadFile(filepath.Join("testdata/cni", file))
		if err != nil {
			t.Fatal(err)
		}
		ps, err := ParseCNIRanges(b)
		if err != nil {
			t.Fatalf("%s: %v", file, err)
		}
		var got []string
		for _, p := range ps {
			got = append(got, p.String())
		}
		if strings.Join(got, ",") != want {
			t.Errorf("%s: ranges %v, want %s", file, got, want)
		}
	}
	if _, err := ParseCNIRanges([]byte(`{"plugins": [`)); err == nil {
		t.Error("broken JSON: no error")
	}
}

func FuzzParseCNIRanges(f *testing.F) {
	for _, n := range []string{"bridge-dualstack.conflist", "bridge-subnet.conf", "calico.conflist"} {
		b, err := os.ReadFile(filepath.Join("testdata/cni", n))
		if err != nil {
			f.Fatal(err)
		}
		f.Add(b)
	}
	f.Add([]byte(`{"delegate":{"delegate":{"delegate":{"delegate":{"ipam":{"subnet":"10.0.0.0/8"}}}}}}`))
	f.Fuzz(func(t *testing.T, b []byte) {
		ps, err := ParseCNIRanges(b)
		if err != nil && ps != nil {
			t.Fatal("ranges with an error")
		}
		for _, p := range ps {
			if !p.IsValid() || p != p.Masked() {
				t.Fatalf("range %v not valid and masked", p)
			}
		}
	})
}

func TestParseKubeProxyClusterCIDRs(t *testing.T) {
	got, err := kubeproxy.ParseKubeProxyClusterCIDRs(readKP(t, "configz-iptables.json"))
	if err != nil || strings.Join(got, ",") != "10.244.0.0/24" {
		t.Fatalf("%v %v", got, err)
	}
	got, err = kubeproxy.ParseKubeProxyClusterCIDRs([]byte(`{"kubeproxy.config.k8s.io":{"clusterCIDR":"10.244.0.0/16, fd00:10:244::/56"}}`))
	if err != nil || strings.Join(got, ",") != "10.244.0.0/16,fd00:10:244::/56" {
		t.Fatalf("dual-stack: %v %v", got, err)
	}
	if got, err := kubeproxy.ParseKubeProxyClusterCIDRs([]byte(`{"kubeproxy.config.k8s.io":{}}`)); err != nil || got != nil {
		t.Fatalf("none: %v %v", got, err)
	}
}

// fakeKPCIDR is a kube-proxy that also serves clusterCIDR.
type fakeKPCIDR struct {
	fakeKP
	cidrs []string
}

func (f fakeKPCIDR) ClusterCIDRs(context.Context) ([]string, error) { return f.cidrs, f.err }

type fakePodAddrs []PodAddr

func (f fakePodAddrs) PodAddrs(context.Context) ([]PodAddr, error) { return f, nil }

func TestPodRangeSources(t *testing.T) {
	conf, err := os.ReadFile("testdata/cni/bridge-ipv4.conflist")
	if err != nil {
		t.Fatal(err)
	}
	pods := fakePodAddrs{
		{IP: netip.MustParseAddr("10.244.1.5"), Pod: "default/in-cni-range"},
		{IP: netip.MustParseAddr("192.168.7.9"), Pod: "calico/elsewhere"},
	}
	fsys := fstest.MapFS{"run/cni/conf/10-bridge.conflist": {Data: conf}}
	node := &corev1.Node{Spec: corev1.NodeSpec{PodCIDR: "10.244.1.0/24"}}
	src := func(r []PodRange) string {
		var out []string
		for _, x := range r {
			out = append(out, x.String())
		}
		return strings.Join(out, "; ")
	}
	for _, tc := range []struct {
		name string
		s    PodRangeSources
		want string
	}{
		{"nothing", PodRangeSources{}, ""},
		{"node first, the same CNI range not repeated", PodRangeSources{Node: fakeLister{node: node}, FS: fsys, CNIConfDir: func(context.Context) (string, error) { return "/run/cni/conf", nil }},
			"10.244.1.0/24 (the Node's spec.podCIDRs)"},
		{"kube-proxy", PodRangeSources{Node: fakeLister{node: &corev1.Node{}}, KubeProxy: fakeKPCIDR{cidrs: []string{"10.244.0.0/16"}}},
			"10.244.0.0/16 (kube-proxy's clusterCIDR)"},
		{"kube-proxy without the capability", PodRangeSources{KubeProxy: fakeKP{}}, ""},
		{"CNI config in the runtime's dir, pod IPs outside it", PodRangeSources{FS: fsys, CNIConfDir: func(context.Context) (string, error) { return "/run/cni/conf", nil }, Pods: pods},
			"10.244.1.0/24 (the CNI config /run/cni/conf/10-bridge.conflist); 192.168.7.9/32 (the IP of pod calico/elsewhere)"},
		{"default CNI dir absent", PodRangeSources{FS: fsys}, ""},
		{"pod IPs alone", PodRangeSources{Pods: pods},
			"10.244.1.5/32 (the IP of pod default/in-cni-range); 192.168.7.9/32 (the IP of pod calico/elsewhere)"},
	} {
		t.Run(tc.name, func(t *testing.T) {
			r, err := tc.s.PodRanges(context.Background())
			r = SelectPodRanges(r, nil)
			if err != nil {
				t.Fatal(err)
			}
			if got := src(r); got != tc.want {
				t.Errorf("got %q\nwant %q", got, tc.want)
			}
		})
	}
}

// flakyPodAddrs fails when err is set.
type flakyPodAddrs struct {
	addrs fakePodAddrs
	err   *error
}

func (f flakyPodAddrs) PodAddrs(ctx context.Context) ([]PodAddr, error) {
	if *f.err != nil {
		return nil, *f.err
	}
	return f.addrs, nil
}

func TestLastGoodRanges(t *testing.T) {
	conf, err := os.ReadFile("testdata/cni/bridge-ipv4.conflist")
	if err != nil {
		t.Fatal(err)
	}
	var down error
	kp := &fakeKPCIDR{cidrs: []string{"10.244.0.0/16"}}
	l := &LastGoodRanges{Sources: PodRangeSources{
		KubeProxy:  kp,
		FS:         fstest.MapFS{"run/cni/conf/10-bridge.conflist": {Data: conf}},
		CNIConfDir: func(context.Context) (string, error) { return "/run/cni/conf", down },
		Pods:       flakyPodAddrs{fakePodAddrs{{IP: netip.MustParseAddr("10.244.1.5"), Pod: "default/web"}}, &down},
	}}
	str := func() string {
		rs, err := l.PodRanges(context.Background())
		if err != nil {
			t.Fatal(err)
		}
		var out []string
		for _, r := range rs {
			out = append(out, r.String())
		}
		return strings.Join(out, "; ")
	}
	want := "10.244.0.0/16 (kube-proxy's clusterCIDR); 10.244.1.0/24 (the CNI config /run/cni/conf/10-bridge.conflist); 10.244.1.5/32 (the IP of pod default/web)"
	if got := str(); got != want {
		t.Fatalf("all sources up: %q", got)
	}
	// kube-proxy restarting, the runtime not answering: the last answers.
	down = errors.New("connection refused")
	kp.err = down
	if got := str(); got != want {
		t.Errorf("sources down: %q, want the last answers %q", got, want)
	}
	// An answer replaces the last one, also when it is empty.
	down, kp.err, kp.cidrs = nil, nil, nil
	if got := str(); strings.Contains(got, "clusterCIDR") {
		t.Errorf("kube-proxy answered without clusterCIDR: %q", got)
	}
	if _, err := (&LastGoodRanges{Sources: PodRangeSources{KubeProxy: fakeKPCIDR{fakeKP: fakeKP{err: errors.New("down")}}}}).PodRanges(context.Background()); err == nil {
		t.Error("no source ever answered: no error")
	}
	// No kube-proxy listening and no runtime (a machine that is not a
	// node): no ranges, and no error either, so forward-policy does not
	// apply rather than fail.
	absentErr := error(fmt.Errorf("%w: cri: no container runtime found", ErrRangeSourceAbsent))
	none := &LastGoodRanges{Sources: PodRangeSources{
		KubeProxy: fakeKPCIDR{fakeKP: fakeKP{err: fmt.Errorf("get /configz: %w", syscall.ECONNREFUSED)}},
		Pods:      flakyPodAddrs{nil, &absentErr},
	}}
	if rs, err := none.PodRanges(context.Background()); err != nil || len(rs) != 0 {
		t.Errorf("absent sources: %v, %v", rs, err)
	}
}

func TestSelectPodRanges(t *testing.T) {
	all := []PodRange{
		{Prefix: netip.MustParsePrefix("10.244.0.0/24"), Source: RangeFromKubeProxy},
		{Prefix: netip.MustParsePrefix("10.244.0.0/24"), Source: RangeFromCNI, Origin: "/etc/cni/net.d/10-bridge.conflist"},
		{Prefix: netip.MustParsePrefix("10.244.0.5/32"), Source: RangeFromPodIP, Origin: "default/web"},
	}
	for src, want := range map[string]string{
		"":     "10.244.0.0/24 (kube-proxy's clusterCIDR)",
		"cni":  "10.244.0.0/24 (the CNI config /etc/cni/net.d/10-bridge.conflist)",
		"pods": "10.244.0.5/32 (the IP of pod default/web)",
		"node": "",
	} {
		var srcs []string
		if src != "" {
			srcs = []string{src}
		}
		var got []string
		for _, r := range SelectPodRanges(all, srcs) {
			got = append(got, r.String())
		}
		if strings.Join(got, "; ") != want {
			t.Errorf("sources %q: %v, want %s", src, got, want)
		}
	}
}

type fixedRanges []PodRange

func (f fixedRanges) PodRanges(context.Context) ([]PodRange, error) { return f, nil }

func TestForwardPolicyRules(t *testing.T) {
	read := func(n string) string {
		b, err := os.ReadFile(filepath.Join("testdata/forward", n))
		if err != nil {
			t.Fatal(err)
		}
		return string(b)
	}
	cni := fixedRanges{{Prefix: netip.MustParsePrefix("10.88.0.0/16"), Source: RangeFromCNI, Origin: "/etc/cni/net.d/10-containerd-net.conflist"}}
	podIP := fixedRanges{{Prefix: netip.MustParsePrefix("10.88.0.7/32"), Source: RangeFromPodIP, Origin: "default/web"}}
	node := fixedRanges{{Prefix: netip.MustParsePrefix("10.88.0.0/16"), Source: RangeFromNode}}
	kp := fixedRanges{{Prefix: netip.MustParsePrefix("10.88.0.0/16"), Source: RangeFromKubeProxy}}
	kubeFilter := string(readKP(t, "iptables-nft-filter.txt"))
	for _, tc := range []struct {
		name, filter string
		ranges       fixedRanges
		want         []string
		msg          string // in the first finding's message
	}{
		{"kube-proxy's own rules are quiet", kubeFilter, cni, []string{"ForwardAccepts"}, "10.88.0.0/16 (the CNI config"},
		{"Docker's FORWARD DROP, isolation chains on docker0 only", read("docker.txt"), cni, []string{"ForwardDropsPodTraffic"}, "10.88.0.0/16 (the CNI config /etc/cni/net.d/10-containerd-net.conflist)"},
		{"Docker with the pod range let in through DOCKER-USER", strings.Replace(read("docker.txt"), "-A DOCKER-USER -j RETURN", "-A DOCKER-USER -s 10.88.0.0/16 -j ACCEPT\n-A DOCKER-USER -j RETURN", 1), cni, []string{"ForwardAccepts"}, ""},
		{"Docker found from the Node's podCIDRs", read("docker.txt"), node, []string{"ForwardDropsPodTraffic"}, "10.88.0.0/16 (the Node's spec.podCIDRs)"},
		{"Docker found from kube-proxy's clusterCIDR", read("docker.txt"), kp, []string{"ForwardDropsPodTraffic"}, "10.88.0.0/16 (kube-proxy's clusterCIDR)"},
		{"Docker found from a pod IP alone", read("docker.txt"), podIP, []string{"ForwardDropsPodTraffic"}, "10.88.0.7/32 (the IP of pod default/web)"},
		{"firewalld's catch-all REJECT", read("firewalld.txt"), cni, []string{"PodTrafficDropped"}, "-A FORWARD -j REJECT --reject-with icmp-host-prohibited"},
		{"firewalld after the CNI's accept", strings.Replace(read("firewalld.txt"), "-A FORWARD -i lo -j ACCEPT", "-A FORWARD -i lo -j ACCEPT\n-A FORWARD -s 10.88.0.0/16 -j ACCEPT", 1), cni, []string{"ForwardAccepts"}, ""},
		{"CNI firewall plugin's per-pod accepts", read("cni-forward.txt"), cni, []string{"ForwardAccepts"}, ""},
		{"hand-written DROP of the pod range", strings.Replace(kubeFilter, "COMMIT", "-A FORWARD -d 10.88.0.0/16 -m comment --comment \"block pods\" -j DROP\nCOMMIT", 1), cni, []string{"PodTrafficDropped"}, "pod range 10.88.0.0/16 (the CNI config"},
		{"hand-written REJECT of a Service address", strings.Replace(kubeFilter, "COMMIT", "-A FORWARD -d 10.96.0.10/32 -j REJECT\nCOMMIT", 1), cni, []string{"PodTrafficDropped"}, "Service addresses"},
		{"a DROP on one interface only", strings.Replace(kubeFilter, "COMMIT", "-A FORWARD -i eth9 -j DROP\nCOMMIT", 1), cni, []string{"ForwardAccepts"}, ""},
	} {
		t.Run(tc.name, func(t *testing.T) {
			svcs := fakeLister{svcs: []*corev1.Service{{Spec: corev1.ServiceSpec{ClusterIPs: []string{"10.96.0.10"}}}}}
			f, err := runDef(t, ForwardPolicy(kubeproxy.KubeProxyDeps{Services: svcs, IPTables: fakeSaver{"nft/filter": tc.filter}}, tc.ranges))
			if err != nil {
				t.Fatal(err)
			}
			if got := findingReasons(f); !slices.Equal(got, tc.want) {
				t.Fatalf("reasons %v, want %v: %+v", got, tc.want, f)
			}
			if !strings.Contains(f[0].Message, tc.msg) {
				t.Errorf("message %q does not say %q", f[0].Message, tc.msg)
			}
			if f[0].Severity == check.SeverityProblem && f[0].Details["rule"] == "" && f[0].Details["pod_range_source"] == "" {
				t.Errorf("problem without the rule or the range's source: %+v", f[0].Details)
			}
		})
	}
	if _, err := runDef(t, ForwardPolicy(kubeproxy.KubeProxyDeps{IPTables: fakeSaver{}}, fixedRanges{})); err == nil || !strings.Contains(err.Error(), "not applicable") {
		t.Errorf("no ranges: want not applicable, got %v", err)
	}
}
