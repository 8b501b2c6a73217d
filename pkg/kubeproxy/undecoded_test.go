package kubeproxy

import (
	"github.com/node-doctor/node-doctor/pkg/dataplane"

	"strings"
	"testing"
)

// A rule the netlink reader could not decode makes the ports whose path it
// is on unverifiable, never broken; ports elsewhere are still judged.
func TestCompareUndecodedIsUnverifiable(t *testing.T) {
	svcs, eps := loadAPI(t, "api-iptables.json")
	desired := v4Only(DesiredServicePorts(svcs, eps, "node-doctor-e2e"))
	read := func(undecoded func(chain string, r dataplane.IPTRule) bool) *Programmed {
		col := newIPTCollector()
		ipt := &dataplane.IPTables{Tables: map[string]*dataplane.IPTTable{}, Rules: func(table, chain string, r dataplane.IPTRule) {
			if undecoded(chain, r) {
				// What the reader keeps of a rule it cannot decode: a best
				// effort line without the undecoded part's options.
				r = dataplane.IPTRule{Line: "-A " + chain + " -m comment --comment x -j " + r.Target, Target: r.Target, Comment: "x", Undecoded: "target DNAT (no decoder): 0000"}
			}
			col.rule(table, chain, r)
		}}
		for _, f := range []string{"iptables-nft-nat.txt", "iptables-nft-filter.txt"} {
			if err := dataplane.ParseIPTablesSaveInto(strings.NewReader(string(readKP(t, f))), ipt); err != nil {
				t.Fatal(err)
			}
		}
		return col.finish(ipt.Table("nat"))
	}
	// The DNAT of one of web:http's endpoints.
	p := read(func(chain string, r dataplane.IPTRule) bool {
		return chain == "KUBE-SEP-QVQOOZTB5K5KEGSW" && r.ToDest != ""
	})
	unverifiable := func(disc []Discrepancy) int {
		n := 0
		for _, d := range disc {
			if d.Unverifiable == "" || d.Reason != "RulesNotUnderstood" {
				t.Errorf("a judged difference: %+v", d)
			}
			n++
		}
		return n
	}
	disc, verified, _ := Compare(desired, p)
	if n := unverifiable(disc); n != 1 || verified != 3 || p.Unknown != 1 {
		t.Fatalf("disc %+v, unverifiable %d, verified %d, undecoded %d", disc, n, verified, p.Unknown)
	}
	// A KUBE-SERVICES rule: every port that would look broken is unjudged.
	p = read(func(chain string, r dataplane.IPTRule) bool {
		return chain == "KUBE-SERVICES" && strings.Contains(r.Comment, "dp/web:dns")
	})
	disc, verified, _ = Compare(desired, p)
	if n := unverifiable(disc); n != 1 || verified != 3 {
		t.Fatalf("disc %+v, unverifiable %d, verified %d", disc, n, verified)
	}
	if !strings.Contains(p.UnknownExample, "not decoded") {
		t.Fatalf("example %q", p.UnknownExample)
	}
}

// TestCompareUnknownIsNotAFinding: a rule the reader did not decode in a
// service chain turns that port's difference into RulesNotUnderstood.
func TestCompareUnknownIsNotAFinding(t *testing.T) {
	svcs, eps := loadAPI(t, "api-nftables.json")
	desired := v4Only(DesiredServicePorts(svcs, eps, "node-doctor-e2e"))
	nt, err := dataplane.ParseNFTJSON(readKP(t, "nft-ip-kube-proxy.json"))
	if err != nil {
		t.Fatal(err)
	}
	chain := "service-G72YLFXC-dp/web/tcp/http"
	nt.Chains[chain].DNAT = nt.Chains[chain].DNAT[:1] // the undecoded rule held the other endpoint
	disc, verified, _ := Compare(desired, ProgrammedFromNFT(nt))
	if len(disc) != 1 || disc[0].Reason != "EndpointMissing" || verified != 3 {
		t.Fatalf("without unknowns: %d verified, %+v", verified, disc)
	}
	nt.Unknown = []dataplane.NFTUnknown{{Where: "chain " + chain, Why: `expression "frobnicate"`, Raw: "00"}}
	p := ProgrammedFromNFT(nt)
	disc, verified, _ = Compare(desired, p)
	if len(disc) != 1 || disc[0].Reason != "RulesNotUnderstood" || disc[0].Unverifiable == "" || verified != 3 || p.Unknown != 1 {
		t.Fatalf("with an unknown rule: %d verified, %+v", verified, disc)
	}
}

// The fuzz targets check that no input panics and that what a decoder
// returns is bounded by its input (nothing is allocated from a length field).
