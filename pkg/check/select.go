package check

import (
	"fmt"
	"slices"
	"strings"
)

// Select returns the definitions to run: those named in only (all when only
// is empty), minus those in skip and those disabled. Unknown names are an
// error listing the known ones.
func Select(defs []*Definition, only, skip []string, disabled map[string]bool) ([]*Definition, error) {
	names := make([]string, len(defs))
	for i, d := range defs {
		names[i] = d.Name
	}
	for _, n := range append(slices.Clone(only), skip...) {
		if !slices.Contains(names, n) {
			return nil, fmt.Errorf("unknown check %q; known checks: %s", n, strings.Join(names, ", "))
		}
	}
	var out []*Definition
	for _, d := range defs {
		switch {
		case len(only) > 0 && !slices.Contains(only, d.Name):
		case slices.Contains(skip, d.Name):
		case len(only) == 0 && disabled[d.Name]:
		default:
			out = append(out, d)
		}
	}
	return out, nil
}
