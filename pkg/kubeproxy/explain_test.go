package kubeproxy

import (
	"context"
	"reflect"
	"strings"
	"testing"

	corev1 "k8s.io/api/core/v1"
	discoveryv1 "k8s.io/api/discovery/v1"

	"github.com/node-doctor/node-doctor/pkg/dataplane"
)

func explainFixture(t *testing.T, api, ns, name, port string, d KubeProxyDeps) (*ServicePath, error) {
	t.Helper()
	svcs, eps := loadAPI(t, api)
	var svc *corev1.Service
	for _, s := range svcs {
		if s.Namespace == ns && s.Name == name {
			svc = s
		}
	}
	if svc == nil {
		t.Fatalf("no service %s/%s in %s", ns, name, api)
	}
	var mine []*discoveryv1.EndpointSlice
	for _, e := range eps {
		if e.Namespace == ns && e.Labels[discoveryv1.LabelServiceName] == name {
			mine = append(mine, e)
		}
	}
	return ExplainService(context.Background(), d, nil, svc, mine, nil, "node-doctor-e2e", port)
}

func iptDeps(mode, nat, filter string) KubeProxyDeps {
	return KubeProxyDeps{IPTables: fakeSaver{"nft/nat": nat, "nft/filter": filter}, KubeProxy: fakeKP{mode: mode}}
}

func hopsWith(pp PortPath, status string) []Hop {
	var out []Hop
	for _, h := range pp.Hops {
		if h.Status == status {
			out = append(out, h)
		}
	}
	return out
}

func TestExplainServiceIPTablesHealthy(t *testing.T) {
	nat, filter := string(readKP(t, "iptables-nft-nat.txt")), string(readKP(t, "iptables-nft-filter.txt"))
	p, err := explainFixture(t, "api-iptables.json", "dp", "web", "", iptDeps("iptables", nat, filter))
	if err != nil {
		t.Fatal(err)
	}
	if p.Mode != "iptables" || p.Backend != dataplane.BackendNFT || p.Broken() {
		t.Fatalf("mode %s backend %s broken %v: %+v", p.Mode, p.Backend, p.Broken(), p)
	}
	if len(p.Ports) != 2 {
		t.Fatalf("ports: %+v", p.Ports)
	}
	for _, pp := range p.Ports {
		if bad := append(hopsWith(pp, HopStale), append(hopsWith(pp, HopMissing), hopsWith(pp, HopWrong)...)...); len(bad) > 0 {
			t.Errorf("%s: %+v", pp.Port, bad)
		}
	}
	http := p.Ports[1]
	if http.Port != "dp/web:http" {
		t.Fatalf("order: %s", http.Port)
	}
	var text []string
	for _, h := range http.Hops {
		text = append(text, h.Where+" | "+h.Rule+" | "+h.Note)
	}
	all := strings.Join(text, "\n")
	for _, want := range []string{
		"nat KUBE-SERVICES | -A KUBE-SERVICES -d 10.96.77.115/32 -p tcp",
		"nat KUBE-SVC-IFGUBRKS5UGRVAEJ | -A KUBE-SVC-IFGUBRKS5UGRVAEJ -m comment --comment \"dp/web:http -> 10.244.0.2:8080\" -m statistic --mode random --probability 0.50000000000 -j KUBE-SEP-QVQOOZTB5K5KEGSW | probability 0.5",
		"nat KUBE-SEP-QVQOOZTB5K5KEGSW | -A KUBE-SEP-QVQOOZTB5K5KEGSW -p tcp -m comment --comment \"dp/web:http\" -m tcp -j DNAT --to-destination 10.244.0.2:8080 | DNAT to 10.244.0.2:8080",
		"DNAT to 10.244.0.3:8080",
	} {
		if !strings.Contains(all, want) {
			t.Errorf("hops lack %q:\n%s", want, all)
		}
	}
	if strings.Contains(all, "dp/web:dns") {
		t.Errorf("http port shows dns rules:\n%s", all)
	}
}

func TestExplainServiceIPTablesBroken(t *testing.T) {
	nat, filter := string(readKP(t, "iptables-nft-nat.txt")), string(readKP(t, "iptables-nft-filter.txt"))
	t.Run("stale endpoint", func(t *testing.T) {
		// The API lost 10.244.0.3; the rules still send traffic to it.
		p, err := explainFixture(t, "api-iptables-after-delete.json", "dp", "web", "http", iptDeps("iptables", nat, filter))
		if err != nil {
			t.Fatal(err)
		}
		if !p.Broken() || len(p.Ports) != 1 {
			t.Fatalf("broken %v ports %d", p.Broken(), len(p.Ports))
		}
		pp := p.Ports[0]
		stale := hopsWith(pp, HopStale)
		if len(stale) == 0 || !strings.Contains(stale[0].Rule+stale[len(stale)-1].Rule, "10.244.0.3") {
			t.Errorf("stale hops: %+v", stale)
		}
		if pp.Problems[0].Reason != "StaleEndpoint" || pp.Problems[0].Fix == "" {
			t.Errorf("problems: %+v", pp.Problems)
		}
	})
	t.Run("service rule missing", func(t *testing.T) {
		var kept []string
		for _, l := range strings.Split(nat, "\n") {
			if !strings.Contains(l, "dp/web:http cluster IP") {
				kept = append(kept, l)
			}
		}
		p, err := explainFixture(t, "api-iptables.json", "dp", "web", "80", iptDeps("iptables", strings.Join(kept, "\n"), filter))
		if err != nil {
			t.Fatal(err)
		}
		pp := p.Ports[0]
		miss := hopsWith(pp, HopMissing)
		if len(miss) != 1 || !strings.Contains(miss[0].Rule, "10.96.77.115/tcp/80 -> KUBE-SVC-IFGUBRKS5UGRVAEJ") {
			t.Errorf("missing hops: %+v", miss)
		}
		if !p.Broken() || pp.Problems[0].Reason != "ServicePortNotProgrammed" {
			t.Errorf("problems: %+v", pp.Problems)
		}
	})
	t.Run("no endpoints", func(t *testing.T) {
		p, err := explainFixture(t, "api-iptables.json", "dp", "empty", "", iptDeps("iptables", nat, filter))
		if err != nil {
			t.Fatal(err)
		}
		pp := p.Ports[0]
		if !p.Broken() || pp.Problems[0].Reason != "NoReadyEndpoints" || !strings.Contains(pp.Problems[0].Fix, "kubernetes.io/service-name=empty") {
			t.Errorf("problems: %+v", pp.Problems)
		}
		ok := hopsWith(pp, HopOK)
		if len(ok) != 1 || !strings.Contains(ok[0].Where, "filter KUBE-SERVICES") || !strings.Contains(ok[0].Rule, "REJECT") {
			t.Errorf("hops: %+v", pp.Hops)
		}
	})
}

func TestExplainServiceIPTablesNodePort(t *testing.T) {
	nat, filter := string(readKP(t, "iptables-nft-nat.txt")), string(readKP(t, "iptables-nft-filter.txt"))
	p, err := explainFixture(t, "api-iptables.json", "dp", "np-local", "", iptDeps("iptables", nat, filter))
	if err != nil {
		t.Fatal(err)
	}
	if p.Broken() {
		t.Fatalf("%+v", p.Ports[0].Problems)
	}
	var where []string
	for _, h := range p.Ports[0].Hops {
		if h.Status != HopOK {
			t.Errorf("hop %+v", h)
		}
		where = append(where, h.Where)
	}
	w := strings.Join(where, ",")
	for _, c := range []string{"nat KUBE-NODEPORTS", "nat KUBE-EXT-QZRUK5RJDEVTJUTS", "nat KUBE-SVL-QZRUK5RJDEVTJUTS", "nat KUBE-SVC-QZRUK5RJDEVTJUTS"} {
		if !strings.Contains(w, c) {
			t.Errorf("no hop in %s: %s", c, w)
		}
	}
}

func TestExplainServiceNFTables(t *testing.T) {
	d := KubeProxyDeps{NFT: fakeNFT{"ip": readKP(t, "nft-ip-kube-proxy.json")}, KubeProxy: fakeKP{mode: "nftables"}}
	p, err := explainFixture(t, "api-nftables.json", "dp", "web", "http", d)
	if err != nil {
		t.Fatal(err)
	}
	if p.Mode != "nftables" || p.Broken() {
		t.Fatalf("mode %s, problems %+v", p.Mode, p.Ports)
	}
	pp := p.Ports[0]
	var dnat []string
	for _, h := range pp.Hops {
		if h.Status != HopOK {
			t.Errorf("hop %+v", h)
		}
		if strings.HasPrefix(h.Rule, "dnat to ") {
			dnat = append(dnat, strings.TrimPrefix(h.Rule, "dnat to "))
		}
	}
	if strings.Join(dnat, ",") != strings.Join(pp.Endpoints, ",") || len(dnat) == 0 {
		t.Errorf("dnat %v, endpoints %v", dnat, pp.Endpoints)
	}
	if pp.Hops[0].Where != "set cluster-ips" || pp.Hops[0].Rule != pp.ClusterIP {
		t.Errorf("first hop %+v", pp.Hops[0])
	}
	if pp.Hops[1].Where != "map service-ips" || !strings.HasPrefix(pp.Hops[1].Rule, pp.ClusterIP+" . tcp . 80 : goto service-") {
		t.Errorf("second hop %+v", pp.Hops[1])
	}
	// The ClusterIP deleted from cluster-ips: a missing hop and the problem.
	broken := strings.Replace(string(readKP(t, "nft-ip-kube-proxy.json")), `"10.96.191.74", "10.96.240.14"]`, `"10.96.240.14"]`, 1)
	d = KubeProxyDeps{NFT: fakeNFT{"ip": []byte(broken)}, KubeProxy: fakeKP{mode: "nftables"}}
	if p, err = explainFixture(t, "api-nftables.json", "dp", "web", "http", d); err != nil {
		t.Fatal(err)
	}
	pp = p.Ports[0]
	if pp.Hops[0].Status != HopMissing || pp.Hops[0].Where != "set cluster-ips" || len(pp.Problems) != 1 || pp.Problems[0].Reason != "ClusterIPNotInSet" {
		t.Errorf("cluster-ips element deleted: hops %+v, problems %+v", pp.Hops[:1], pp.Problems)
	}
}

func TestExplainServiceRefuses(t *testing.T) {
	nat, filter := string(readKP(t, "iptables-nft-nat.txt")), string(readKP(t, "iptables-nft-filter.txt"))
	if _, err := explainFixture(t, "api-iptables.json", "dp", "headless", "", iptDeps("iptables", nat, filter)); err == nil || !strings.Contains(err.Error(), "headless") {
		t.Errorf("headless: %v", err)
	}
	if _, err := explainFixture(t, "api-iptables.json", "dp", "web", "9999", iptDeps("iptables", nat, filter)); err == nil || !strings.Contains(err.Error(), "http 80, dns 53") {
		t.Errorf("bad port: %v", err)
	}
	if _, err := explainFixture(t, "api-iptables.json", "dp", "web", "", iptDeps("nftables", nat, filter)); err == nil || !strings.Contains(err.Error(), "nftables mode but none") {
		t.Errorf("wrong mode: %v", err)
	}
}

// VerifyService, on the snapshot's compact view, finds exactly the
// problems ExplainService finds walking the rules: cluster-dns uses the one,
// explain service the other.
func TestVerifyServiceMatchesExplain(t *testing.T) {
	nat, filter := string(readKP(t, "iptables-nft-nat.txt")), string(readKP(t, "iptables-nft-filter.txt"))
	noJump := strings.Replace(nat, "-A KUBE-SERVICES -d 10.96.77.115/32 -p tcp -m comment --comment \"dp/web:http cluster IP\" -m tcp --dport 80 -j KUBE-SVC-IFGUBRKS5UGRVAEJ\n", "", 1)
	nftDeps := KubeProxyDeps{NFT: fakeNFT{"ip": readKP(t, "nft-ip-kube-proxy.json")}, KubeProxy: fakeKP{mode: "nftables"}}
	for _, tc := range []struct {
		name, api, svc string
		d              KubeProxyDeps
		broken         bool
	}{
		{"iptables healthy", "api-iptables.json", "web", iptDeps("iptables", nat, filter), false},
		{"iptables stale endpoint", "api-iptables-after-delete.json", "web", iptDeps("iptables", nat, filter), true},
		{"iptables ClusterIP rule missing", "api-iptables.json", "web", iptDeps("iptables", noJump, filter), true},
		{"iptables no endpoints", "api-iptables.json", "empty", iptDeps("iptables", nat, filter), true},
		{"iptables NodePort", "api-iptables.json", "np-local", iptDeps("iptables", nat, filter), false},
		{"nftables", "api-nftables.json", "web", nftDeps, false},
	} {
		t.Run(tc.name, func(t *testing.T) {
			want, err := explainFixture(t, tc.api, "dp", tc.svc, "", tc.d)
			if err != nil {
				t.Fatal(err)
			}
			svcs, eps := loadAPI(t, tc.api)
			var svc *corev1.Service
			for _, s := range svcs {
				if s.Namespace == "dp" && s.Name == tc.svc {
					svc = s
				}
			}
			obs, err := ReadProgrammed(context.Background(), tc.d, DefaultKubeProxySettings(), tc.d.API(DefaultKubeProxySettings()))
			if err != nil {
				t.Fatal(err)
			}
			got := VerifyService(obs, svc, eps, nil, "node-doctor-e2e")
			if got.Broken() != tc.broken || want.Broken() != tc.broken || got.Mode != want.Mode || len(got.Ports) != len(want.Ports) {
				t.Fatalf("verify: broken %v mode %s %d ports; explain: broken %v mode %s %d ports", got.Broken(), got.Mode, len(got.Ports), want.Broken(), want.Mode, len(want.Ports))
			}
			for i := range want.Ports {
				g, w := got.Ports[i], want.Ports[i]
				if g.Port != w.Port || g.Family != w.Family || !reflect.DeepEqual(g.Problems, w.Problems) {
					t.Errorf("port %s/%s: verify %+v, explain %+v", w.Port, w.Family, g.Problems, w.Problems)
				}
			}
		})
	}
}
