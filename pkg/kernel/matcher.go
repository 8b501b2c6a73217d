package kernel

import "slices"

// matchHandler receives what the matcher finds. text aliases the matcher's
// buffers; sub holds the submatch indexes into text, or is nil when the
// handler must find them itself (with r.re), so that a match it drops
// costs no allocation.
type matchHandler interface {
	onMatch(r *Rule, text []byte, sub []int)
	onRecovery(r *Rule, text []byte)
}

// matcher runs a rule set over lines. A cheap prefilter (the literals every
// match must contain) decides which regexps run at all, so a line that
// matches nothing costs one pass over its bytes and no allocation. It is
// used by one goroutine.
type matcher struct {
	set *RuleSet
	pf  *prefilter
	// Pattern ids: rule i is i; the recovery pattern of rule i is n+i.
	n         int
	always    []uint64 // ids without a usable literal, as a bitset
	hasAlways bool
	hits      []uint64

	lineNo uint64
	// tail[i] says multi-line rule i's literals are in its last line, so
	// it runs only when the newest line has one.
	tail []bool
	// lastSeen[i] is the line number at which rule i's literal was last
	// seen; any other multi-line rule runs while that line is buffered.
	lastSeen  []uint64
	multiTill uint64
	hasMulti  bool
	// matched holds the rules matched on the current line: of rules with
	// the same reason and condition, the first to match a line wins.
	matched  []*Rule
	ring     [][]byte // the last BufferSize lines, oldest at ringHead
	ringHead int
	ringLen  int
	joined   []byte
}

func newMatcher(set *RuleSet) *matcher {
	n := len(set.Rules)
	m := &matcher{set: set, n: n, lastSeen: make([]uint64, n), tail: make([]bool, n)}
	words := (2*n + 63) / 64
	m.hits, m.always = make([]uint64, words), make([]uint64, words)
	lits := make([][]string, 2*n)
	for i, r := range set.Rules {
		if l, ok := tailLiterals(r.Pattern); ok && r.multiLine {
			lits[i], m.tail[i] = l, true
		} else if l, ok := requiredLiterals(r.Pattern); ok {
			lits[i] = l
		} else {
			m.always[i>>6] |= 1 << (i & 63)
			m.hasAlways = true
		}
		if r.Recovery != nil {
			if l, ok := requiredLiterals(r.Recovery.String()); ok {
				lits[n+i] = l
			} else {
				m.always[(n+i)>>6] |= 1 << ((n + i) & 63)
				m.hasAlways = true
			}
		}
		m.hasMulti = m.hasMulti || r.multiLine
	}
	m.pf = newPrefilter(lits)
	if m.hasMulti {
		m.ring = make([][]byte, set.BufferSize)
	}
	return m
}

func (m *matcher) process(line []byte, h matchHandler) {
	m.lineNo++
	if m.hasMulti {
		m.push(line)
	}
	clear(m.hits)
	hit := m.pf.scan(line, m.hits)
	if !hit && !m.hasAlways && m.lineNo > m.multiTill {
		return
	}
	for w := range m.hits {
		m.hits[w] |= m.always[w]
	}
	m.matched = m.matched[:0]
	for i, r := range m.set.Rules {
		seen := m.hits[i>>6]&(1<<(i&63)) != 0
		if !r.multiLine {
			if seen && !m.alreadyMatched(r) && r.re.Match(line) && !m.skipped(r, line) {
				m.matched = append(m.matched, r)
				h.onMatch(r, line, nil)
			}
			continue
		}
		if m.tail[i] {
			if !seen {
				continue
			}
		} else if seen {
			m.lastSeen[i] = m.lineNo
			m.multiTill = max(m.multiTill, m.lineNo+uint64(m.set.BufferSize)-1)
		}
		if !m.tail[i] && (m.lastSeen[i] == 0 || m.lineNo-m.lastSeen[i] >= uint64(m.set.BufferSize)) {
			continue
		}
		if m.alreadyMatched(r) {
			continue
		}
		buf := m.join(r.spanLines)
		loc := r.re.FindSubmatchIndex(buf)
		if loc == nil {
			continue
		}
		// The finding quotes whole lines: from the start of the first one.
		start := loc[0]
		for start > 0 && buf[start-1] != '\n' {
			start--
		}
		text := buf[start:]
		for j := range loc {
			if loc[j] >= 0 {
				loc[j] -= start
			}
		}
		if !m.skipped(r, text) {
			m.matched = append(m.matched, r)
			h.onMatch(r, text, loc)
		}
	}
	for i, r := range m.set.Rules {
		id := m.n + i
		if r.Recovery != nil && m.hits[id>>6]&(1<<(id&63)) != 0 && r.Recovery.Match(line) {
			h.onRecovery(r, line)
		}
	}
}

func (m *matcher) alreadyMatched(r *Rule) bool {
	return slices.ContainsFunc(m.matched, func(o *Rule) bool {
		return o.Reason == r.Reason && o.Permanent == r.Permanent && o.Condition == r.Condition
	})
}

func (m *matcher) skipped(r *Rule, text []byte) bool {
	for _, re := range m.set.Skip {
		if re.Match(text) {
			return true
		}
	}
	for _, re := range r.Skip {
		if re.Match(text) {
			return true
		}
	}
	return false
}

func (m *matcher) push(line []byte) {
	size := len(m.ring)
	i := (m.ringHead + m.ringLen) % size
	if m.ringLen == size {
		i = m.ringHead
		m.ringHead = (m.ringHead + 1) % size
	} else {
		m.ringLen++
	}
	m.ring[i] = append(m.ring[i][:0], line...)
}

// join returns the last n buffered lines (all if n is 0 or more than
// there are), oldest first, joined by newlines.
func (m *matcher) join(n int) []byte {
	m.joined = m.joined[:0]
	first := 0
	if n > 0 && n < m.ringLen {
		first = m.ringLen - n
	}
	for k := first; k < m.ringLen; k++ {
		if k > first {
			m.joined = append(m.joined, '\n')
		}
		m.joined = append(m.joined, m.ring[(m.ringHead+k)%len(m.ring)]...)
	}
	return m.joined
}
