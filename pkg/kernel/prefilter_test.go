package kernel

import (
	"math/rand/v2"
	"regexp"
	"strings"
	"testing"
)

func TestRequiredLiterals(t *testing.T) {
	for _, tc := range []struct {
		pattern string
		want    []string // nil: no usable literal
	}{
		{`Killed process \d+ (.+) total-vm:\d+kB`, []string{"killed process "}},
		{`task [\S ]+:\w+ blocked for more than \w+ seconds\.`, []string{" blocked for more than "}},
		{`(?i)neighbou?r table overflow`, []string{"r table overflow"}},
		{`Remounting filesystem read-only|forced readonly`, []string{"forced readonly", "remounting filesystem read-only"}},
		{`foo|\d+`, nil},
		{`.*`, nil},
		{`ab`, nil},
		{`first line\nsecond, longer line`, []string{"second, longer line"}},
		{`(?:EXT4-fs error){2,}`, []string{"ext4-fs error"}},
		{`(?:EXT4-fs error)?`, nil},
	} {
		got, ok := requiredLiterals(tc.pattern)
		if ok != (tc.want != nil) || strings.Join(got, "|") != strings.Join(tc.want, "|") {
			t.Errorf("requiredLiterals(%q) = %q, %v; want %q", tc.pattern, got, ok, tc.want)
		}
	}
}

// TestPrefilterAgreesWithContains checks the automaton against
// strings.Contains on random lines over a small alphabet, where literals
// overlap and share suffixes.
func TestPrefilterAgreesWithContains(t *testing.T) {
	lits := [][]string{{"abc"}, {"bca", "cab"}, {"aaa"}, {"bcab"}, {"ca"}, {"xyz"}}
	p := newPrefilter(lits)
	rng := rand.New(rand.NewPCG(1, 2))
	hits := make([]uint64, 1)
	for range 20000 {
		b := make([]byte, rng.IntN(12))
		for i := range b {
			b[i] = "abcABCx"[rng.IntN(7)]
		}
		hits[0] = 0
		p.scan(b, hits)
		lower := strings.ToLower(string(b))
		for id, ls := range lits {
			want := false
			for _, l := range ls {
				want = want || strings.Contains(lower, l)
			}
			if got := hits[0]&(1<<id) != 0; got != want {
				t.Fatalf("line %q, literals %q: hit = %v, want %v", b, ls, got, want)
			}
		}
	}
}

// TestRequiredLiteralsAreRequired checks on random strings that a pattern
// never matches a line without one of its literals.
func TestRequiredLiteralsAreRequired(t *testing.T) {
	patterns := []string{`ab+c|cd`, `(?i)A(bc)+d`, `x[ab]yz|q{2,3}rs`, `(abc|bcd)e?f`}
	rng := rand.New(rand.NewPCG(3, 4))
	for _, pat := range patterns {
		re := regexp.MustCompile(pat)
		lits, ok := requiredLiterals(pat)
		for range 20000 {
			b := make([]byte, rng.IntN(10))
			for i := range b {
				b[i] = "abcdefqrsxyzABCD"[rng.IntN(16)]
			}
			if !re.Match(b) {
				continue
			}
			found := !ok
			for _, l := range lits {
				found = found || strings.Contains(strings.ToLower(string(b)), l)
			}
			if !found {
				t.Fatalf("%q matches %q, which has none of %q", pat, b, lits)
			}
		}
	}
}
