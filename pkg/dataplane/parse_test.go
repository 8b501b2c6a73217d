package dataplane

import (
	"bytes"
	"os"
	"path/filepath"
	"slices"
	"testing"
)

const kpData = "testdata/kubeproxy"

func readKP(t testing.TB, name string) []byte {
	t.Helper()
	b, err := os.ReadFile(filepath.Join(kpData, name))
	if err != nil {
		t.Fatal(err)
	}
	return b
}

func loadIPT(t testing.TB, files ...string) *IPTables {
	t.Helper()
	var all []byte
	for _, f := range files {
		all = append(all, readKP(t, f)...)
	}
	ipt, err := ParseIPTablesSave(bytes.NewReader(all))
	if err != nil {
		t.Fatal(err)
	}
	return ipt
}

func TestParseIPTablesSaveReal(t *testing.T) {
	ipt := loadIPT(t, "iptables-nft-nat.txt", "iptables-nft-filter.txt")
	nat, filter := ipt.Table("nat"), ipt.Table("filter")
	if nat == nil || filter == nil {
		t.Fatalf("tables: %v", ipt.Tables)
	}
	if got := filter.Chain("FORWARD").Policy; got != "ACCEPT" {
		t.Errorf("FORWARD policy %q", got)
	}
	sep := nat.Chain("KUBE-SEP-2XV3PIRSHTAXQ3O3")
	if sep == nil || len(sep.Rules) != 2 {
		t.Fatalf("sep chain: %+v", sep)
	}
	r := sep.Rules[1]
	if r.Target != "DNAT" || r.ToDest != "10.244.0.3:8080" || r.Comment != "dp/web:http" || r.Proto != "tcp" {
		t.Errorf("dnat rule: %+v", r)
	}
	mark := nat.Chain("KUBE-SVC-IFGUBRKS5UGRVAEJ").Rules[0]
	if mark.Source != "!10.244.0.0/24" || mark.Dest != "10.96.77.115/32" || mark.DPort != "80" || mark.Target != "KUBE-MARK-MASQ" {
		t.Errorf("masq rule: %+v", mark)
	}
	if !nat.Chain("KUBE-EXT-QZRUK5RJDEVTJUTS").Rules[1].SrcLocal {
		t.Error("src-type LOCAL not seen")
	}
}

func TestParseNFTJSONReal(t *testing.T) {
	nt, err := ParseNFTJSON(readKP(t, "nft-ip-kube-proxy.json"))
	if err != nil {
		t.Fatal(err)
	}
	if nt.Family != "ip" || nt.Name != "kube-proxy" {
		t.Errorf("table %s %s", nt.Family, nt.Name)
	}
	c := nt.Chains["service-G72YLFXC-dp/web/tcp/http"]
	if c == nil || !slices.Equal(c.DNAT, []string{"10.244.0.2:8080", "10.244.0.3:8080"}) {
		t.Errorf("numgen chain %+v", c)
	}
	if c := nt.Chains["service-2QRHZV4L-default/kubernetes/tcp/https"]; c == nil || !slices.Equal(c.DNAT, []string{"198.51.100.10:6443"}) {
		t.Errorf("inline dnat chain %+v", c)
	}
	ne := nt.Maps["no-endpoint-services"]
	if ne == nil || len(ne.Elements) != 1 || ne.Elements[0].Comment != "dp/empty:http" || !slices.Equal(ne.Elements[0].Key, []string{"10.96.240.14", "tcp", "80"}) {
		t.Errorf("no-endpoint-services %+v", ne)
	}
	if cs := nt.Sets["cluster-ips"]; cs == nil || len(cs.Elements) != 4 || !slices.Equal(cs.Elements[1].Key, []string{"10.96.36.25"}) {
		t.Errorf("cluster-ips %+v", cs)
	}
	if hp := nt.Sets["hairpin-connections"]; hp == nil || len(hp.Elements) != 4 || !slices.Equal(hp.Elements[0].Key, []string{"10.244.0.2", "10.244.0.2", "udp", "8053"}) {
		t.Errorf("hairpin-connections %+v", hp)
	}
	if np := nt.Sets["nodeport-ips"]; np == nil || len(np.Elements) != 1 || np.Elements[0].Key[0] != "198.51.100.10" {
		t.Errorf("nodeport-ips %+v", np)
	}
	if _, err := ParseNFTJSON(readKP(t, "nft-ip6-kube-proxy.json")); err != nil {
		t.Errorf("ip6 table: %v", err)
	}
}

// ChainsOnly keeps every chain a full parse has, and no rule.
func TestChainsOnlyKeepsChainsNotRules(t *testing.T) {
	b, err := os.ReadFile(filepath.Join(kpData, "iptables-nft-nat.txt"))
	if err != nil {
		t.Fatal(err)
	}
	full, err := ParseIPTablesSave(bytes.NewReader(b))
	if err != nil {
		t.Fatal(err)
	}
	only := &IPTables{Tables: map[string]*IPTTable{}, ChainsOnly: true}
	if err := ParseIPTablesSaveInto(bytes.NewReader(b), only); err != nil {
		t.Fatal(err)
	}
	nat, onat := full.Table("nat"), only.Table("nat")
	if onat == nil || !slices.Equal(nat.Order, onat.Order) {
		t.Fatalf("chains differ: %v vs %v", nat, onat)
	}
	for name, c := range onat.Chains {
		if len(c.Rules) != 0 || c.Policy != nat.Chains[name].Policy {
			t.Fatalf("%s: %d rules, policy %q (full parse %q)", name, len(c.Rules), c.Policy, nat.Chains[name].Policy)
		}
	}
}

// FuzzParseNFTJSONTable fuzzes the JSON reader alone (pkg/kubeproxy's
// FuzzParseNFTJSON also builds the comparison's view, and crawls): sets,
// maps and rules of nft -j's output.
func FuzzParseNFTJSONTable(f *testing.F) {
	f.Add(readKP(f, "nft-ip-kube-proxy-small.json"))
	f.Add([]byte(`{"nftables": [{"set": {"name": "cluster-ips", "type": "ipv4_addr", "elem": ["10.96.0.1",
		{"elem": {"val": "10.96.0.2", "timeout": 60, "comment": "a/b:c"}}, {"concat": ["10.0.0.1", "10.0.0.1", "tcp", 80]}]}}]}`))
	f.Fuzz(func(t *testing.T, b []byte) {
		nt, err := ParseNFTJSON(b)
		if err != nil {
			return
		}
		for name, s := range nt.Sets {
			if s == nil || s.Name != name || len(s.Elements) > len(b) {
				t.Fatalf("set %q: %+v", name, s)
			}
		}
	})
}
