package check

import (
	"fmt"
	"strings"
)

// Abbreviate joins up to n names and says how many more there are, for
// messages that must stay one readable line.
func Abbreviate(names []string, n int) string {
	return SomeOf(names[:min(max(n, 0), len(names))], len(names))
}

// SomeOf joins the examples kept of total names.
func SomeOf(examples []string, total int) string {
	if total > len(examples) {
		return fmt.Sprintf("%s and %d more", strings.Join(examples, ", "), total-len(examples))
	}
	return strings.Join(examples, ", ")
}
