package dataplane

import (
	"encoding/json"
	"maps"
	"os"
	"path/filepath"
	"slices"
	"testing"

	"github.com/vishvananda/netlink"
)

func TestIPSetsFromNetlink(t *testing.T) {
	b, err := os.ReadFile(filepath.Join("testdata", "ipvs", "ipsets-netlink.json"))
	if err != nil {
		t.Fatal(err)
	}
	var res []netlink.IPSetResult
	if err := json.Unmarshal(b, &res); err != nil {
		t.Fatal(err)
	}
	got := IPSetsFromNetlink(res)
	// What kube-proxy's IPVS mode made on the harness, as ipset(8) lists it.
	want := map[string]IPSet{
		"KUBE-CLUSTER-IP": {"hash:ip,port", []string{"10.96.0.1,tcp:443", "10.96.231.39,tcp:80", "10.96.4.72,tcp:8080",
			"10.96.77.115,tcp:80", "10.96.77.115,udp:53"}},
		"KUBE-EXTERNAL-IP":       {"hash:ip,port", nil},
		"KUBE-EXTERNAL-IP-LOCAL": {"hash:ip,port", []string{"203.0.113.7,tcp:8080"}},
		"KUBE-LOAD-BALANCER":     {"hash:ip,port", nil},
		"KUBE-LOOP-BACK": {"hash:ip,port,ip", []string{"10.244.0.2,tcp:8080,10.244.0.2", "10.244.0.3,tcp:8080,10.244.0.3",
			"10.244.0.2,udp:8053,10.244.0.2", "10.244.0.3,udp:8053,10.244.0.3"}},
		"KUBE-NODE-PORT-TCP":       {"bitmap:port", []string{"30080"}},
		"KUBE-NODE-PORT-LOCAL-TCP": {"bitmap:port", []string{"30080"}},
		"KUBE-NODE-PORT-UDP":       {"bitmap:port", nil},
	}
	for name, w := range want {
		g := got[name]
		slices.Sort(g.Entries)
		we := slices.Sorted(slices.Values(w.Entries))
		if g.Type != w.Type || !slices.Equal(g.Entries, we) {
			t.Errorf("%s: got %s %v, want %s %v", name, g.Type, g.Entries, w.Type, we)
		}
	}
	if _, ok := got["OTHER-SET"]; ok || len(got) != len(want)+1 {
		t.Errorf("sets %v", slices.Sorted(maps.Keys(got)))
	}
	if g := got["KUBE-6-CLUSTER-IP"].Entries; !slices.Equal(g, []string{"fd00:96::a,udp:53"}) {
		t.Errorf("KUBE-6-CLUSTER-IP %v", g)
	}
}
