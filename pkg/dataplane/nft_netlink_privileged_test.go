package dataplane

import (
	"context"
	"fmt"
	"os"
	"path/filepath"
	"reflect"
	"slices"
	"strings"
	"testing"
	"time"

	"github.com/node-doctor/node-doctor/internal/testnetns"
)

// loadNFT loads a ruleset into the namespace with nft -f.
func loadNFT(t testing.TB, ns *testnetns.NS, ruleset string) {
	t.Helper()
	p := filepath.Join(t.TempDir(), "ruleset.nft")
	if err := os.WriteFile(p, []byte(ruleset), 0o600); err != nil {
		t.Fatal(err)
	}
	ns.Exec(t, "nft", "-f", p)
}

// sortedNFT orders what neither reader promises an order for (set
// elements, the values of a numgen map).
func sortedNFT(t *NFTTable) *NFTTable {
	for _, c := range t.Chains {
		slices.Sort(c.DNAT)
	}
	for _, m := range t.Maps {
		slices.SortFunc(m.Elements, func(a, b NFTElement) int {
			return strings.Compare(strings.Join(a.Key, " "), strings.Join(b.Key, " "))
		})
	}
	for _, st := range t.Sets {
		slices.SortFunc(st.Elements, func(a, b NFTElement) int {
			return strings.Compare(strings.Join(a.Key, " "), strings.Join(b.Key, " "))
		})
	}
	return t
}

// readBoth reads one table with nft -j and over netlink.
func readBoth(t testing.TB, ns *testnetns.NS, family string) (exec, native *NFTTable) {
	t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), time.Minute)
	defer cancel()
	exec, native = NewNFTTable(), NewNFTTable()
	eok, err := ExecNFT{Prefix: []string{"ip", "netns", "exec", ns.Name}}.ListTable(ctx, family, "kube-proxy", exec)
	if err != nil {
		t.Fatalf("nft -j: %v", err)
	}
	nok, err := NetlinkNFT{NS: ns.Handle}.ListTable(ctx, family, "kube-proxy", native)
	if err != nil {
		t.Fatalf("netlink: %v", err)
	}
	if eok != nok {
		t.Fatalf("table %s kube-proxy exists: nft says %v, netlink %v", family, eok, nok)
	}
	return sortedNFT(exec), sortedNFT(native)
}

func diffNFT(t *testing.T, what string, exec, native *NFTTable) {
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

// TestPrivilegedNFTNetlinkMatchesExec loads the kube-proxy v1.37.2 table
// captured from the real-node harness into a throwaway namespace and reads
// it with nft -j and over netlink: the two must be the same table, healthy
// and after the breaks the data-plane tests make.
func TestPrivilegedNFTNetlinkMatchesExec(t *testing.T) {
	ns := testnetns.New(t)
	ruleset, err := os.ReadFile("testdata/kubeproxy/nft-ip-kube-proxy.txt")
	if err != nil {
		t.Fatal(err)
	}
	// No table yet: both say so.
	if e, n := readBoth(t, ns, "ip"); len(e.Chains) != 0 || len(n.Chains) != 0 {
		t.Fatalf("no table: %d and %d chains", len(e.Chains), len(n.Chains))
	}
	// Other tables of the family, as iptables-nft and other programs make
	// them: none of theirs may leak into kube-proxy's.
	loadNFT(t, ns, `table ip filter {
	chain INPUT {
		type filter hook input priority filter; policy accept;
		jump KUBE-FIREWALL
	}
	chain KUBE-FIREWALL {
	}
	map service-ips {
		type ipv4_addr . inet_proto . inet_service : verdict
		elements = { 10.96.0.99 . tcp . 80 : goto KUBE-FIREWALL }
	}
	chain services {
		ip daddr 10.96.0.99 goto KUBE-FIREWALL
	}
}
table ip6 kube-proxy {
	chain services {
	}
}
`)
	loadNFT(t, ns, string(ruleset))
	e, n := readBoth(t, ns, "ip")
	diffNFT(t, "healthy", e, n)
	if len(n.Chains) < 20 || len(n.Maps["service-ips"].Elements) != 5 || len(n.Chains["service-G72YLFXC-dp/web/tcp/http"].DNAT) != 2 {
		t.Fatalf("healthy table not read whole: %d chains, %+v", len(n.Chains), n.Maps["service-ips"])
	}
	if got := fmt.Sprint(n.Sets["cluster-ips"].Elements); got != "[{[10.96.0.1]   } {[10.96.191.74]   } {[10.96.240.14]   } {[10.96.36.25]   }]" {
		t.Fatalf("cluster-ips: %s", got)
	}
	if len(n.Sets["nodeport-ips"].Elements) != 1 || len(n.Sets["hairpin-connections"].Elements) != 4 ||
		!slices.Equal(n.Sets["hairpin-connections"].Elements[0].Key, []string{"10.244.0.2", "10.244.0.2", "tcp", "8080"}) {
		t.Fatalf("sets: %+v %+v", n.Sets["nodeport-ips"], n.Sets["hairpin-connections"])
	}

	// Breaks: an element deleted, an endpoint changed, a stale endpoint chain.
	ns.Exec(t, "nft", "delete", "element", "ip", "kube-proxy", "service-ips", "{ 10.96.191.74 . tcp . 80 }")
	ns.Exec(t, "nft", "delete", "element", "ip", "kube-proxy", "cluster-ips", "{ 10.96.36.25 }")
	ns.Exec(t, "nft", "add", "element", "ip", "kube-proxy", "cluster-ips", `{ 10.96.9.9 comment "dp/gone:http" }`)
	ns.Exec(t, "nft", "flush", "chain", "ip", "kube-proxy", "service-V2L7ZRNT-dp/web/udp/dns")
	ns.Exec(t, "nft", "add", "rule", "ip", "kube-proxy", "service-V2L7ZRNT-dp/web/udp/dns",
		"meta l4proto udp dnat ip to numgen random mod 3 map { 0 : 10.244.0.2 . 8053, 1 : 10.244.0.3 . 8053, 2 : 10.244.0.9 . 8053 }")
	loadNFT(t, ns, `table ip kube-proxy {
	chain endpoint-5OJB2KTY-dp/web/tcp/http__10.244.0.4/8080 {
		ip saddr 10.244.0.4 jump mark-for-masquerade
		meta l4proto tcp dnat to 10.244.0.4:8080
	}
	chain mark-for-masquerade {
		mark set mark or 0x4000
	}
	chain service-OLD-dp/gone/tcp/http {
		jump endpoint-5OJB2KTY-dp/web/tcp/http__10.244.0.4/8080
		goto endpoint-5OJB2KTY-dp/web/tcp/http__10.244.0.4/8080
	}
	map no-endpoint-nodeports {
		type inet_proto . inet_service : verdict
		elements = { tcp . 30081 comment "dp/empty:http" : goto reject-chain, udp . 30082 : drop }
	}
	set affinity-XYZ-dp/web/tcp/http__10.244.0.2/8080 {
		type ipv4_addr
		flags dynamic,timeout
		timeout 3h
		elements = { 10.244.0.7 timeout 3h }
	}
	set empty-set {
		type ipv4_addr . inet_proto . inet_service
	}
}
`)
	e, n = readBoth(t, ns, "ip")
	diffNFT(t, "broken", e, n)
	if _, ok := n.Chains["service-OLD-dp/gone/tcp/http"]; !ok || len(n.Maps["service-ips"].Elements) != 4 {
		t.Fatalf("breaks not read: %+v", n.Maps["service-ips"])
	}
	if got := fmt.Sprint(n.Chains["service-V2L7ZRNT-dp/web/udp/dns"].DNAT); got != "[10.244.0.2:8053 10.244.0.3:8053 10.244.0.9:8053]" {
		t.Fatalf("changed endpoints: %s", got)
	}
	if got := fmt.Sprint(n.Sets["cluster-ips"].Elements); got != "[{[10.96.0.1]   } {[10.96.191.74]   } {[10.96.240.14]   } {[10.96.9.9]   dp/gone:http}]" {
		t.Fatalf("cluster-ips after the breaks: %s", got)
	}
	if a := n.Sets["affinity-XYZ-dp/web/tcp/http__10.244.0.2/8080"]; a == nil || len(a.Elements) != 1 || n.Sets["empty-set"] == nil {
		t.Fatalf("affinity and empty sets: %+v", n.Sets)
	}
}

// TestPrivilegedNFTNetlinkIPv6 does the same for the ip6 table.
func TestPrivilegedNFTNetlinkIPv6(t *testing.T) {
	ns := testnetns.New(t)
	loadNFT(t, ns, `table ip6 kube-proxy {
	set cluster-ips {
		type ipv6_addr
		elements = { fd00:10:96::1, fd00:10:96::a }
	}
	set hairpin-connections {
		type ipv6_addr . ipv6_addr . inet_proto . inet_service
		elements = { fd00:10:244::2 . fd00:10:244::2 . udp . 53 }
	}
	map service-ips {
		type ipv6_addr . inet_proto . inet_service : verdict
		elements = { fd00:10:96::1 . tcp . 443 : goto service-2QRHZV4L-default/kubernetes/tcp/https,
			     fd00:10:96::a . udp . 53 comment "kube-system/kube-dns:dns" : goto service-X-kube-system/kube-dns/udp/dns }
	}
	map service-nodeports {
		type inet_proto . inet_service : verdict
		elements = { tcp . 30080 : goto external-EVWWXPC6-dp/np-local/tcp/ }
	}
	chain services {
		ip6 daddr . meta l4proto . th dport vmap @service-ips
	}
	chain external-EVWWXPC6-dp/np-local/tcp/ {
	}
	chain service-2QRHZV4L-default/kubernetes/tcp/https {
		meta l4proto tcp dnat to [2001:db8::10]:6443
	}
	chain service-X-kube-system/kube-dns/udp/dns {
		meta l4proto udp dnat ip6 to numgen random mod 2 map { 0 : fd00:10:244::2 . 53, 1 : fd00:10:244::3 . 53 }
	}
}
`)
	e, n := readBoth(t, ns, "ip6")
	diffNFT(t, "ip6", e, n)
	if len(n.Sets["cluster-ips"].Elements) != 2 || !slices.Equal(n.Sets["hairpin-connections"].Elements[0].Key, []string{"fd00:10:244::2", "fd00:10:244::2", "udp", "53"}) {
		t.Fatalf("ip6 sets: %+v", n.Sets)
	}
	if len(n.Chains["service-X-kube-system/kube-dns/udp/dns"].DNAT) != 2 {
		t.Fatalf("ip6 numgen dnat: %+v", n.Chains["service-X-kube-system/kube-dns/udp/dns"])
	}
}
