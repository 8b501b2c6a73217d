package testmetrics

import (
	"strings"
	"testing"
)

func TestParse(t *testing.T) {
	page := "# HELP a x\n# TYPE a gauge\na 1\nb{c=\"d e\"} 2.5\nbroken\nf NaNx\n\ng 3e2\n"
	m, err := Parse(strings.NewReader(page))
	if err != nil {
		t.Fatal(err)
	}
	want := map[string]float64{"a": 1, `b{c="d e"}`: 2.5, "g": 300}
	if len(m) != len(want) {
		t.Fatalf("got %v", m)
	}
	for k, v := range want {
		if m[k] != v {
			t.Errorf("%s = %v, want %v (all: %v)", k, m[k], v, m)
		}
	}
}
