package check

import "testing"

func TestAbbreviate(t *testing.T) {
	for _, tc := range []struct {
		names []string
		n     int
		want  string
	}{
		{nil, 3, ""},
		{[]string{"a", "b"}, 3, "a, b"},
		{[]string{"a", "b", "c", "d"}, 2, "a, b and 2 more"},
		{[]string{"a"}, 0, " and 1 more"},
		{[]string{"a"}, -1, " and 1 more"},
	} {
		if got := Abbreviate(tc.names, tc.n); got != tc.want {
			t.Errorf("Abbreviate(%q, %d) = %q, want %q", tc.names, tc.n, got, tc.want)
		}
	}
	if got := SomeOf([]string{"x"}, 3); got != "x and 2 more" {
		t.Errorf("SomeOf = %q", got)
	}
}
