package dataplane

import (
	"bufio"
	"encoding/hex"
	"os"
	"strings"
	"testing"
)

// nftRuleFixtures are raw NFT_MSG_NEWRULE bodies captured from
// iptables-nft-restore of real kube-proxy rules (see
// TestPrivilegedNetlinkIPTablesFixtures).
func nftRuleFixtures(t testing.TB) (bodies [][]byte, v6 []bool) {
	t.Helper()
	f, err := os.Open("testdata/iptables-nft/rules.hex")
	if err != nil {
		t.Fatal(err)
	}
	defer f.Close()
	sc := bufio.NewScanner(f)
	sc.Buffer(nil, 1<<20)
	for sc.Scan() {
		fam, h, _ := strings.Cut(sc.Text(), " ")
		b, err := hex.DecodeString(h)
		if err != nil {
			t.Fatal(err)
		}
		bodies = append(bodies, b)
		v6 = append(v6, fam == "6")
	}
	return bodies, v6
}

func TestDecodeNFTRuleFixtures(t *testing.T) {
	bodies, v6 := nftRuleFixtures(t)
	g, err := os.ReadFile("testdata/iptables-nft/rules.golden")
	if err != nil {
		t.Fatal(err)
	}
	want := strings.Split(strings.TrimSpace(string(g)), "\n")
	if len(want) != len(bodies) || len(bodies) < 100 {
		t.Fatalf("%d fixtures, %d golden lines", len(bodies), len(want))
	}
	undecoded := 0
	for i, b := range bodies {
		r, err := decodeNFTRule(b, v6[i])
		if err != nil {
			t.Fatalf("rule %d: %v", i, err)
		}
		line, unk, _ := strings.Cut(want[i], "|")
		if r.Line != line || (r.Unknown != "") != (unk == "true") {
			t.Errorf("rule %d:\n got  %s (undecoded %q)\n want %s", i, r.Line, r.Unknown, want[i])
		}
		if r.Unknown != "" {
			undecoded++
		}
	}
	// The LOG rule, the old conntrack/state revisions iptables-nft-save
	// misprints, and two native forms it cannot print.
	if want := strings.Count(string(g), "|true\n"); undecoded != want || want != 19 {
		t.Errorf("%d undecoded rules, golden has %d, want 19", undecoded, want)
	}
}

// A rule whose expressions are cut short or corrupted is undecoded or an
// error, never a shorter rule passed off as whole.
func TestDecodeNFTRuleTruncated(t *testing.T) {
	bodies, v6 := nftRuleFixtures(t)
	for i, b := range bodies[:20] {
		full, _ := decodeNFTRule(b, v6[i])
		for cut := len(b) - 1; cut > len(b)-40 && cut > 0; cut-- {
			r, err := decodeNFTRule(b[:cut], v6[i])
			if err == nil && r.Unknown == "" && r.Line != full.Line {
				t.Fatalf("rule %d cut at %d decoded as %q (whole: %q)", i, cut, r.Line, full.Line)
			}
		}
	}
}

func TestXTDecodersShortInfo(t *testing.T) {
	for _, n := range []string{"comment", "tcp", "udp", "statistic", "mark", "conntrack", "addrtype", "recent", "multiport"} {
		for _, rev := range []uint32{0, 1, 3} {
			if _, err := xtMatchText(n, rev, make([]byte, 3), false, 6); err == nil {
				t.Errorf("match %s rev %d: 3 bytes decoded", n, rev)
			}
		}
	}
	for _, n := range []string{"DNAT", "SNAT", "MASQUERADE", "MARK", "REJECT"} {
		for _, rev := range []uint32{0, 1, 2} {
			if _, err := xtTargetText(n, rev, make([]byte, 3), true); err == nil {
				t.Errorf("target %s rev %d: 3 bytes decoded", n, rev)
			}
		}
	}
}

func FuzzDecodeIPTablesNFTRule(f *testing.F) {
	bodies, v6 := nftRuleFixtures(f)
	for i, b := range bodies {
		f.Add(b, v6[i])
	}
	f.Fuzz(func(t *testing.T, b []byte, ipv6 bool) {
		r, err := decodeNFTRule(b, ipv6)
		if err == nil && len(r.Line) > 64*len(b)+64 {
			t.Fatalf("line of %d bytes from %d input bytes", len(r.Line), len(b))
		}
	})
}

func FuzzDecodeNFTChain(f *testing.F) {
	f.Add([]byte{})
	f.Fuzz(func(t *testing.T, b []byte) {
		_, _, _ = decodeNFTChain(b)
	})
}

func FuzzXTMatch(f *testing.F) {
	f.Add("conntrack", uint32(3), make([]byte, 168), false)
	f.Add("recent", uint32(1), make([]byte, 232), true)
	f.Add("multiport", uint32(1), make([]byte, 48), false)
	f.Fuzz(func(t *testing.T, name string, rev uint32, info []byte, ipv6 bool) {
		_, _ = xtMatchText(name, rev, info, ipv6, 6)
		_, _ = xtTargetText(name, rev, info, ipv6)
	})
}

func FuzzWalkNetlink(f *testing.F) {
	f.Add([]byte{16, 0, 0, 0, 3, 0, 2, 0, 1, 0, 0, 0, 0, 0, 0, 0}, uint32(1))
	f.Fuzz(func(t *testing.T, b []byte, seq uint32) {
		_, _, _ = walkNetlink(b, seq, func([]byte) error { return nil })
	})
}

// kube-proxy's nfacct rule (the namespace tests cannot create the
// accounting object, so this one is built by hand) prints as in the
// captured iptables-nft-save output, two spaces included.
func TestXTNfacct(t *testing.T) {
	info := make([]byte, 40)
	copy(info, "ct_state_invalid_dropped_pkts")
	got, err := xtMatchText("nfacct", 0, info, false, 0)
	if err != nil || !strings.Contains(string(readKP(t, "iptables-nft-filter.txt")), got+" -j DROP") {
		t.Fatalf("%q %v", got, err)
	}
}
