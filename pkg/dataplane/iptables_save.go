package dataplane

import (
	"bufio"
	"fmt"
	"io"
	"strings"
)

// IPTables is what iptables-save printed for one or more tables.
type IPTables struct {
	Tables map[string]*IPTTable
	// ChainsOnly keeps chains and policies and skips the rules, for a
	// caller that only asks which chains exist (a nat table with 10,000
	// Services is then a few MiB, not tens).
	ChainsOnly bool
	// Rules, when set, receives each rule as it is read instead of the rule
	// being stored (chains are still kept). Its strings are only valid
	// during the call: copy what is kept.
	Rules func(table, chain string, r IPTRule)
}

// IPTTable is one table of an iptables-save dump.
type IPTTable struct {
	Name   string
	Chains map[string]*IPTChain
	// Order lists chain names as declared.
	Order []string
}

// IPTChain is one chain with its policy ("-" for user chains) and rules.
type IPTChain struct {
	Name   string
	Policy string
	Rules  []IPTRule
}

// IPTRule is one "-A" line, with the fields the kube-proxy comparison needs
// pulled out. In most tables every field is a substring of Line, so a rule
// costs one string. In the nat table, where kube-proxy writes several rules
// per endpoint, Line is not kept and the fields are copies (repeated ones
// shared): a nat dump then costs a fraction of its size in memory.
type IPTRule struct {
	Line     string
	Target   string // -j or -g
	Comment  string
	Source   string // -s, "!" prefixed when negated
	Dest     string // -d, "!" prefixed when negated
	Proto    string
	DPort    string
	ToDest   string // DNAT --to-destination
	Goto     bool
	SrcLocal bool // -m addrtype --src-type LOCAL
	// Undecoded is set by the netlink reader for a rule with a part it has
	// no decoder for (what and its raw bytes); Line is then a best effort
	// and the rule must not be taken as proof of anything.
	Undecoded string
}

// Table returns the named table, or nil.
func (t *IPTables) Table(name string) *IPTTable {
	if t == nil {
		return nil
	}
	return t.Tables[name]
}

// Chain returns the named chain, or nil.
func (t *IPTTable) Chain(name string) *IPTChain {
	if t == nil {
		return nil
	}
	return t.Chains[name]
}

// ParseIPTablesSave reads iptables-save output line by line into tables,
// chains and rules. It does not hold the whole input; lines longer than
// 1 MiB are an error.
func ParseIPTablesSave(r io.Reader) (*IPTables, error) {
	out := &IPTables{Tables: map[string]*IPTTable{}}
	if err := ParseIPTablesSaveInto(r, out); err != nil {
		return nil, err
	}
	return out, nil
}

// ParseIPTablesSaveInto is ParseIPTablesSave into out (its Rules hook and
// ChainsOnly apply).
func ParseIPTablesSaveInto(r io.Reader, out *IPTables) error {
	sc := bufio.NewScanner(r)
	sc.Buffer(make([]byte, 0, 64*1024), 1<<20)
	var cur *IPTTable
	n := 0
	var strs Interner
	toks := make([]string, 0, 32) // reused: one token slice per line was most of the garbage
	for sc.Scan() {
		n++
		line := strings.TrimRight(sc.Text(), "\r")
		if line == "" || line[0] == '#' {
			continue
		}
		switch line[0] {
		case '*':
			name := line[1:]
			if name == "" {
				return fmt.Errorf("iptables-save line %d: table without a name", n)
			}
			cur = out.Tables[name]
			if cur == nil {
				cur = &IPTTable{Name: name, Chains: map[string]*IPTChain{}}
				out.Tables[name] = cur
			}
		case ':':
			if cur == nil {
				return fmt.Errorf("iptables-save line %d: chain outside a table", n)
			}
			f := strings.Fields(line[1:])
			if len(f) < 2 {
				return fmt.Errorf("iptables-save line %d: malformed chain line %q", n, line)
			}
			cur.chain(strs.Get(f[0])).Policy = strs.Get(f[1])
		case '-':
			if cur == nil {
				return fmt.Errorf("iptables-save line %d: rule outside a table", n)
			}
			if out.ChainsOnly {
				continue
			}
			rule, chain, err := parseIPTRule(line, toks[:0])
			if err != nil {
				return fmt.Errorf("iptables-save line %d: %w", n, err)
			}
			out.add(cur, chain, rule, &strs)
		default:
			if line == "COMMIT" {
				cur = nil
				continue
			}
			return fmt.Errorf("iptables-save line %d: unexpected %q", n, Truncate(line, 60))
		}
	}
	if err := sc.Err(); err != nil {
		return fmt.Errorf("iptables-save: read: %w", err)
	}
	return nil
}

// Interner shares the strings a dump repeats (chain names, comments,
// protocols, ports) and copies the rest out of the line they were cut from.
type Interner map[string]string

// Get returns the shared copy of s.
func (in *Interner) Get(s string) string {
	if s == "" {
		return ""
	}
	if *in == nil {
		*in = map[string]string{}
	}
	if v, ok := (*in)[s]; ok {
		return v
	}
	v := strings.Clone(s)
	(*in)[v] = v
	return v
}

// compact drops Line and detaches every field from it.
func (in *Interner) compact(r IPTRule) IPTRule {
	r.Line = ""
	r.Target = in.Get(r.Target)
	r.Comment = in.Get(r.Comment)
	r.Proto = in.Get(r.Proto)
	r.DPort = in.Get(r.DPort)
	r.Source = strings.Clone(r.Source)
	r.Dest = strings.Clone(r.Dest)
	r.ToDest = strings.Clone(r.ToDest)
	r.Undecoded = strings.Clone(r.Undecoded)
	return r
}

// detach is r with every field copied out of the line it was cut from,
// Line kept.
func (in *Interner) detach(r IPTRule) IPTRule {
	line := strings.Clone(r.Line)
	r = in.compact(r)
	r.Line = line
	return r
}

// add stores (or hands to Rules) one rule of chain in table cur.
func (t *IPTables) add(cur *IPTTable, chain string, rule IPTRule, strs *Interner) {
	c := cur.chain(strs.Get(chain))
	if t.Rules != nil {
		t.Rules(cur.Name, c.Name, rule)
		return
	}
	if cur.Name == "nat" {
		rule = strs.compact(rule)
	}
	c.Rules = append(c.Rules, rule)
}

func (t *IPTTable) chain(name string) *IPTChain {
	c := t.Chains[name]
	if c == nil {
		c = &IPTChain{Name: name}
		t.Chains[name] = c
		t.Order = append(t.Order, name)
	}
	return c
}

// parseIPTRule splits an "-A CHAIN ..." line. Arguments are words except a
// double-quoted string (comments), where \" and \\ are escapes.
func parseIPTRule(line string, scratch []string) (IPTRule, string, error) {
	r := IPTRule{Line: line}
	toks, err := SplitIPTArgs(line, scratch)
	if err != nil {
		return r, "", err
	}
	if len(toks) < 2 || toks[0] != "-A" {
		return r, "", fmt.Errorf("rule does not start with -A CHAIN: %q", Truncate(line, 60))
	}
	chain := toks[1]
	neg := false
	next := func(i int) string {
		if i+1 < len(toks) {
			return toks[i+1]
		}
		return ""
	}
	for i := 2; i < len(toks); i++ {
		t := toks[i]
		if t == "!" {
			neg = true
			continue
		}
		v := next(i)
		bang := ""
		if neg {
			bang = "!"
		}
		switch t {
		case "-j", "--jump":
			r.Target = v
		case "-g", "--goto":
			r.Target, r.Goto = v, true
		case "--comment":
			r.Comment = v
		case "-s", "--source":
			r.Source = joinBang(bang, v)
		case "-d", "--destination":
			r.Dest = joinBang(bang, v)
		case "-p", "--protocol":
			r.Proto = joinBang(bang, v)
		case "--dport", "--destination-port":
			r.DPort = joinBang(bang, v)
		case "--to-destination":
			r.ToDest = v
		case "--src-type":
			r.SrcLocal = v == "LOCAL" && !neg
		default:
			neg = false
			continue
		}
		neg = false
		i++
	}
	return r, chain, nil
}

func joinBang(bang, v string) string {
	if bang == "" {
		return v
	}
	return bang + v
}

// SplitIPTArgs splits on spaces, keeping double-quoted strings whole
// (without the quotes). Unquoted words are substrings of line.
func SplitIPTArgs(line string, toks []string) ([]string, error) {
	for i := 0; i < len(line); {
		switch line[i] {
		case ' ', '\t':
			i++
			continue
		case '"':
			j := i + 1
			esc := false
			for ; j < len(line); j++ {
				if line[j] == '\\' {
					esc = true
					j++
					continue
				}
				if line[j] == '"' {
					break
				}
			}
			if j >= len(line) {
				return nil, fmt.Errorf("unterminated quote in %q", Truncate(line, 60))
			}
			s := line[i+1 : j]
			if esc {
				s = unescapeIPT(s)
			}
			toks = append(toks, s)
			i = j + 1
		default:
			j := i
			for j < len(line) && line[j] != ' ' && line[j] != '\t' {
				j++
			}
			toks = append(toks, line[i:j])
			i = j
		}
	}
	return toks, nil
}

func unescapeIPT(s string) string {
	var b strings.Builder
	for i := 0; i < len(s); i++ {
		if s[i] == '\\' && i+1 < len(s) {
			i++
		}
		b.WriteByte(s[i])
	}
	return b.String()
}

// Truncate cuts s to n bytes, marking the cut.
func Truncate(s string, n int) string {
	if len(s) <= n {
		return s
	}
	return s[:n] + "…"
}
