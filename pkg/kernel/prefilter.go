package kernel

import (
	"regexp/syntax"
	"slices"
	"strings"
	"unicode/utf8"
)

// minLiteral is the shortest literal worth filtering on.
const minLiteral = 3

// requiredLiterals returns strings, lower-cased, such that every match of
// the pattern contains at least one of them; ok is false when there are
// none worth using. Literals never contain a newline.
func requiredLiterals(pattern string) ([]string, bool) {
	re, err := syntax.Parse(pattern, syntax.Perl)
	if err != nil {
		return nil, false
	}
	lits, ok := literals(re.Simplify())
	if !ok {
		return nil, false
	}
	slices.Sort(lits)
	return slices.Compact(lits), true
}

func literals(re *syntax.Regexp) ([]string, bool) {
	switch re.Op {
	case syntax.OpLiteral:
		s := string(re.Rune)
		if re.Flags&syntax.FoldCase != 0 && !isASCII(s) {
			return nil, false // the filter folds ASCII only
		}
		// A match spans lines only at a newline; the longest piece of the
		// literal is still in one line.
		best := ""
		for p := range strings.SplitSeq(s, "\n") {
			if len(p) > len(best) {
				best = p
			}
		}
		if len(best) < minLiteral {
			return nil, false
		}
		return []string{strings.ToLower(best)}, true
	case syntax.OpCapture:
		return literals(re.Sub[0])
	case syntax.OpPlus:
		return literals(re.Sub[0])
	case syntax.OpRepeat:
		if re.Min >= 1 {
			return literals(re.Sub[0])
		}
	case syntax.OpAlternate:
		var out []string
		for _, sub := range re.Sub {
			l, ok := literals(sub)
			if !ok {
				return nil, false
			}
			out = append(out, l...)
		}
		return out, true
	case syntax.OpConcat:
		// Any one required part will do; take the one whose shortest
		// literal is longest, as it filters best.
		var best []string
		bestLen := 0
		for _, sub := range re.Sub {
			l, ok := literals(sub)
			if !ok {
				continue
			}
			if m := minLen(l); m > bestLen {
				best, bestLen = l, m
			}
		}
		return best, best != nil
	}
	return nil, false
}

func minLen(ss []string) int {
	m := -1
	for _, s := range ss {
		if m < 0 || len(s) < m {
			m = len(s)
		}
	}
	return m
}

func isASCII(s string) bool {
	for i := 0; i < len(s); i++ {
		if s[i] >= utf8.RuneSelf {
			return false
		}
	}
	return true
}

// prefilter finds, in one pass over a line, which patterns' literals occur
// in it (Aho-Corasick over ASCII-folded bytes, as a DFA over byte classes).
type prefilter struct {
	class  [256]uint8
	nclass int
	// delta[state*nclass+class] is the next state's row offset
	// (state*nclass), with outFlag set if a literal ends there.
	delta   []uint32
	out     [][]int32 // state -> pattern ids ending here (with suffixes)
	npat    int
	overmax bool
}

const outFlag = 1 << 31

func newPrefilter(lits [][]string) *prefilter {
	p := &prefilter{npat: len(lits)}
	// Byte classes: each distinct (folded) byte used by a literal gets its
	// own class; every other byte is class 0.
	for _, ls := range lits {
		for _, l := range ls {
			for i := 0; i < len(l); i++ {
				c := l[i]
				if p.class[c] == 0 {
					p.nclass++
					p.class[c] = uint8(p.nclass)
				}
			}
		}
	}
	p.nclass++
	for c := 'A'; c <= 'Z'; c++ {
		p.class[c] = p.class[c+'a'-'A']
	}

	type node struct {
		next map[uint8]int
		fail int
		out  []int32
	}
	nodes := []node{{next: map[uint8]int{}}}
	for id, ls := range lits {
		for _, l := range ls {
			s := 0
			for i := 0; i < len(l); i++ {
				c := p.class[l[i]]
				n, ok := nodes[s].next[c]
				if !ok {
					nodes = append(nodes, node{next: map[uint8]int{}})
					n = len(nodes) - 1
					nodes[s].next[c] = n
				}
				s = n
			}
			if !slices.Contains(nodes[s].out, int32(id)) {
				nodes[s].out = append(nodes[s].out, int32(id))
			}
		}
	}
	if len(nodes)*p.nclass >= outFlag {
		// Too many literals for the table: every pattern is a candidate.
		p.overmax = true
		return p
	}
	next := make([]int, len(nodes)*p.nclass) // state*nclass+class -> state
	p.out = make([][]int32, len(nodes))
	// Breadth first, so a node's fail state is complete before its children.
	queue := []int{0}
	for len(queue) > 0 {
		s := queue[0]
		queue = queue[1:]
		n := &nodes[s]
		if s != 0 {
			for _, id := range nodes[n.fail].out {
				if !slices.Contains(n.out, id) {
					n.out = append(n.out, id)
				}
			}
		}
		p.out[s] = n.out
		for c := 0; c < p.nclass; c++ {
			child, ok := n.next[uint8(c)]
			switch {
			case ok:
				if s == 0 {
					nodes[child].fail = 0
				} else {
					nodes[child].fail = next[n.fail*p.nclass+c]
				}
				next[s*p.nclass+c] = child
				queue = append(queue, child)
			case s == 0:
				next[c] = 0
			default:
				next[s*p.nclass+c] = next[n.fail*p.nclass+c]
			}
		}
	}
	p.delta = make([]uint32, len(next))
	for i, to := range next {
		p.delta[i] = uint32(to * p.nclass)
		if len(p.out[to]) > 0 {
			p.delta[i] |= outFlag
		}
	}
	return p
}

// scan sets the bit of each pattern whose literal is in line in hits (of
// at least (npat+63)/64 words, cleared by the caller) and reports whether
// it set any.
func (p *prefilter) scan(line []byte, hits []uint64) bool {
	if p.overmax {
		for id := range p.npat {
			hits[id>>6] |= 1 << (id & 63)
		}
		return p.npat > 0
	}
	var off uint32
	any := false
	delta, class := p.delta, &p.class
	for _, c := range line {
		off = delta[off+uint32(class[c])]
		if off&outFlag != 0 {
			off &^= outFlag
			any = true
			for _, id := range p.out[int(off)/p.nclass] {
				hits[id>>6] |= 1 << (id & 63)
			}
		}
	}
	return any
}

// tailLiterals, for a multi-line pattern, returns literals that must be in
// the last line of every match: those of the part after the last piece
// that can match a newline. A match ends at the newest line, so the rule
// need only run when that line has one of them.
func tailLiterals(pattern string) ([]string, bool) {
	re, err := syntax.Parse(pattern, syntax.Perl)
	if err != nil {
		return nil, false
	}
	re = re.Simplify()
	for re.Op == syntax.OpCapture {
		re = re.Sub[0]
	}
	if re.Op != syntax.OpConcat {
		return nil, false
	}
	k := -1
	for i, sub := range re.Sub {
		if canMatchNewline(sub) {
			k = i
		}
	}
	tail := &syntax.Regexp{Op: syntax.OpConcat, Sub: re.Sub[k+1:]}
	lits, ok := literals(tail)
	if !ok {
		return nil, false
	}
	slices.Sort(lits)
	return slices.Compact(lits), true
}

func canMatchNewline(re *syntax.Regexp) bool {
	switch re.Op {
	case syntax.OpLiteral:
		return slices.Contains(re.Rune, '\n')
	case syntax.OpCharClass:
		for i := 0; i+1 < len(re.Rune); i += 2 {
			if re.Rune[i] <= '\n' && '\n' <= re.Rune[i+1] {
				return true
			}
		}
		return false
	case syntax.OpAnyChar:
		return true
	}
	for _, sub := range re.Sub {
		if canMatchNewline(sub) {
			return true
		}
	}
	return false
}

// maxNewlines returns how many newlines a match of pattern can span, or -1
// if there is no bound. A multi-line rule then needs only that many lines
// before the newest, however large the buffer.
func maxNewlines(pattern string) int {
	re, err := syntax.Parse(pattern, syntax.Perl)
	if err != nil {
		return -1
	}
	return newlines(re.Simplify())
}

func newlines(re *syntax.Regexp) int {
	switch re.Op {
	case syntax.OpLiteral:
		n := 0
		for _, r := range re.Rune {
			if r == '\n' {
				n++
			}
		}
		return n
	case syntax.OpCharClass, syntax.OpAnyChar:
		if canMatchNewline(re) {
			return 1
		}
		return 0
	case syntax.OpStar, syntax.OpPlus:
		if canMatchNewline(re.Sub[0]) {
			return -1
		}
		return 0
	case syntax.OpRepeat:
		n := newlines(re.Sub[0])
		switch {
		case n == 0:
			return 0
		case n < 0 || re.Max < 0:
			return -1
		}
		return n * re.Max
	case syntax.OpConcat:
		total := 0
		for _, sub := range re.Sub {
			n := newlines(sub)
			if n < 0 {
				return -1
			}
			total += n
		}
		return total
	case syntax.OpAlternate:
		most := 0
		for _, sub := range re.Sub {
			n := newlines(sub)
			if n < 0 {
				return -1
			}
			most = max(most, n)
		}
		return most
	}
	most := 0 // captures, quest: their one sub
	for _, sub := range re.Sub {
		n := newlines(sub)
		if n < 0 {
			return -1
		}
		most = max(most, n)
	}
	return most
}
