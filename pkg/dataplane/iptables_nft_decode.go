package dataplane

import (
	"encoding/binary"
	"encoding/hex"
	"fmt"
	"net/netip"
	"strconv"
	"strings"

	"golang.org/x/sys/unix"
)

// This file turns the nf_tables netlink messages iptables-nft writes back
// into the "-A CHAIN ..." lines iptables-nft-save prints for them, so the
// same rule parser reads both. Every function here is pure: bytes in.

// nftChainInfo is one chain of an iptables-nft table.
type nftChainInfo struct {
	Name   string
	Base   bool   // has a hook (a built-in chain)
	Hook   uint32 // NF_INET_* when Base
	Policy string // ACCEPT/DROP for base chains, "-" for user chains
}

// decodeNFTChain reads one NFT_MSG_NEWCHAIN message body (after the
// nfgenmsg header).
func decodeNFTChain(b []byte) (table string, c nftChainInfo, err error) {
	c.Policy = "-"
	policy := uint32(1) // NF_ACCEPT
	a := nlAttrs{b: b}
	for t, v, ok := a.next(); ok; t, v, ok = a.next() {
		switch t {
		case unix.NFTA_CHAIN_TABLE:
			table = nlString(v)
		case unix.NFTA_CHAIN_NAME:
			c.Name = nlString(v)
		case unix.NFTA_CHAIN_HOOK:
			c.Base = true
			h := nlAttrs{b: v}
			for ht, hv, ok := h.next(); ok; ht, hv, ok = h.next() {
				if ht == unix.NFTA_HOOK_HOOKNUM {
					c.Hook, _ = be32(hv)
				}
			}
		case unix.NFTA_CHAIN_POLICY:
			if p, ok := be32(v); ok {
				policy = p
			}
		}
	}
	if err := a.err(); err != nil {
		return "", c, fmt.Errorf("nft chain: %w", err)
	}
	if c.Base {
		c.Policy = "ACCEPT"
		if policy == 0 {
			c.Policy = "DROP"
		}
	}
	return table, c, nil
}

// nftRuleLine is one decoded rule.
type nftRuleLine struct {
	Table, Chain string
	// Line is what iptables-nft-save prints for the rule.
	Line string
	// Unknown is set when part of the rule has no decoder: it names the
	// part and holds its raw bytes, and Line is then only a best effort.
	Unknown string
}

// decodeNFTRule reads one NFT_MSG_NEWRULE message body (after the nfgenmsg
// header) of an ip (ipv6 false) or ip6 table.
func decodeNFTRule(b []byte, ipv6 bool) (nftRuleLine, error) {
	var r nftRuleLine
	var exprs, udata []byte
	a := nlAttrs{b: b}
	for t, v, ok := a.next(); ok; t, v, ok = a.next() {
		switch t {
		case unix.NFTA_RULE_TABLE:
			r.Table = nlString(v)
		case unix.NFTA_RULE_CHAIN:
			r.Chain = nlString(v)
		case unix.NFTA_RULE_EXPRESSIONS:
			exprs = v
		case unix.NFTA_RULE_USERDATA:
			udata = v
		}
	}
	if err := a.err(); err != nil {
		return r, fmt.Errorf("nft rule: %w", err)
	}
	if r.Chain == "" {
		return r, fmt.Errorf("nft rule: no chain")
	}
	st := ruleState{ipv6: ipv6}
	if err := st.exprs(exprs); err != nil {
		st.unknown("expressions", exprs, err)
	}
	if c, ok := udataComment(udata); ok && !st.sawComment {
		st.matches = append(st.matches, ruleMatch{text: " -m comment --comment" + saveString(c)})
	}
	r.Line = st.line(r.Chain)
	r.Unknown = st.unk
	return r, nil
}

// udataComment is the comment older iptables-nft stored in the rule's
// user data (NFTNL_UDATA_RULE_COMMENT) rather than in a comment match.
func udataComment(b []byte) (string, bool) {
	for len(b) >= 2 {
		t, l := b[0], int(b[1])
		if 2+l > len(b) {
			return "", false
		}
		if t == 0 {
			return cString(b[2 : 2+l]), true
		}
		b = b[2+l:]
	}
	return "", false
}

// ruleMatch is one "-m" part of a rule, in expression order. Native port
// matches accumulate into one tcp/udp match as iptables-nft does.
type ruleMatch struct {
	text         string // the whole match, or a native one's --tcp-flags
	proto        string // native port match: "tcp" or "udp"
	sport, dport string
}

func (m *ruleMatch) write(b *strings.Builder) {
	if m.proto == "" {
		b.WriteString(m.text)
		return
	}
	b.WriteString(" -m ")
	b.WriteString(m.proto)
	b.WriteString(m.sport)
	b.WriteString(m.dport)
	b.WriteString(m.text) // libxt_tcp prints the flags after the ports
}

// Register sources, and the nf_tables constants x/sys does not have.
const (
	regNone = iota
	regPayload
	regMeta

	payloadNetwork   = 1 // NFT_PAYLOAD_NETWORK_HEADER
	payloadTransport = 2 // NFT_PAYLOAD_TRANSPORT_HEADER

	nftaBitwiseOp = 6
)

// regSource is what the rule loaded into register 1 last.
type regSource struct {
	kind   int
	base   uint32
	off    uint32
	len    uint32
	meta   uint32
	mask   []byte
	masked bool
}

type ruleState struct {
	ipv6 bool
	reg  regSource
	imm  [32][]byte // registers loaded by immediate (native nat)

	src, dst, in, out, proto string // the header part, already with " ! -s" etc.
	protoNum                 int
	matches                  []ruleMatch
	target                   string
	sawComment               bool
	unk                      string
}

func (s *ruleState) unknown(what string, raw []byte, err error) {
	if s.unk != "" {
		return
	}
	s.unk = what
	if err != nil {
		s.unk += " (" + err.Error() + ")"
	}
	if len(raw) > 0 {
		if len(raw) > 512 {
			raw = raw[:512]
		}
		s.unk += ": " + hex.EncodeToString(raw)
	}
}

func (s *ruleState) line(chain string) string {
	var b strings.Builder
	b.Grow(128)
	b.WriteString("-A ")
	b.WriteString(chain)
	b.WriteString(s.src)
	b.WriteString(s.dst)
	b.WriteString(s.in)
	b.WriteString(s.out)
	b.WriteString(s.proto)
	for i := range s.matches {
		s.matches[i].write(&b)
	}
	b.WriteString(s.target)
	return b.String()
}

// exprs walks the NFTA_RULE_EXPRESSIONS list.
func (s *ruleState) exprs(b []byte) error {
	a := nlAttrs{b: b}
	for t, v, ok := a.next(); ok; t, v, ok = a.next() {
		if t != unix.NFTA_LIST_ELEM {
			continue
		}
		var name, data []byte
		e := nlAttrs{b: v}
		for et, ev, ok := e.next(); ok; et, ev, ok = e.next() {
			switch et {
			case unix.NFTA_EXPR_NAME:
				name = ev
			case unix.NFTA_EXPR_DATA:
				data = ev
			}
		}
		n := cString(name)
		if err := e.err(); err != nil {
			s.unknown("expression "+n, v, err)
			continue
		}
		if err := s.expr(n, data); err != nil {
			s.unknown("expression "+n, data, err)
		}
	}
	return a.err()
}

var errNoDecoder = fmt.Errorf("no decoder")

// exprAttrs is an expression's attributes by type, with the 4-byte ones
// also read as numbers.
type exprAttrs struct {
	u32  [16]uint32
	has  uint32 // bit per type
	data [16][]byte
}

func readExprAttrs(b []byte) (exprAttrs, error) {
	var x exprAttrs
	a := nlAttrs{b: b}
	for t, v, ok := a.next(); ok; t, v, ok = a.next() {
		if t >= 16 {
			continue
		}
		x.has |= 1 << t
		x.data[t] = v
		if u, ok := be32(v); ok {
			x.u32[t] = u
		}
	}
	return x, a.err()
}

func (x *exprAttrs) get(t uint16) (uint32, bool) { return x.u32[t], x.has&(1<<t) != 0 }

func (s *ruleState) expr(name string, data []byte) error {
	if name == "match" || name == "target" {
		return s.xt(name, data)
	}
	x, err := readExprAttrs(data)
	if err != nil {
		return err
	}
	switch name {
	case "counter":
		return nil
	case "payload":
		dreg, _ := x.get(unix.NFTA_PAYLOAD_DREG)
		if _, w := x.get(unix.NFTA_PAYLOAD_SREG); w || dreg != 1 {
			return errNoDecoder
		}
		base, _ := x.get(unix.NFTA_PAYLOAD_BASE)
		off, _ := x.get(unix.NFTA_PAYLOAD_OFFSET)
		l, _ := x.get(unix.NFTA_PAYLOAD_LEN)
		s.reg = regSource{kind: regPayload, base: base, off: off, len: l}
		return nil
	case "meta":
		dreg, _ := x.get(unix.NFTA_META_DREG)
		if _, w := x.get(unix.NFTA_META_SREG); w || dreg != 1 {
			return errNoDecoder
		}
		key, _ := x.get(unix.NFTA_META_KEY)
		s.reg = regSource{kind: regMeta, meta: key}
		return nil
	case "bitwise":
		sreg, _ := x.get(unix.NFTA_BITWISE_SREG)
		dreg, _ := x.get(unix.NFTA_BITWISE_DREG)
		l, _ := x.get(unix.NFTA_BITWISE_LEN)
		op, _ := x.get(nftaBitwiseOp)
		mask, mok := nestedValue(x.data[unix.NFTA_BITWISE_MASK])
		xor, xok := nestedValue(x.data[unix.NFTA_BITWISE_XOR])
		if sreg != 1 || dreg != 1 || op != 0 || !mok || !xok || s.reg.kind == regNone || s.reg.masked || !allZero(xor) || len(mask) != int(l) {
			return errNoDecoder
		}
		s.reg.mask, s.reg.masked = mask, true
		return nil
	case "cmp":
		sreg, _ := x.get(unix.NFTA_CMP_SREG)
		op, _ := x.get(unix.NFTA_CMP_OP)
		v, ok := nestedValue(x.data[unix.NFTA_CMP_DATA])
		if sreg != 1 || !ok || (op != unix.NFT_CMP_EQ && op != unix.NFT_CMP_NEQ) {
			return errNoDecoder
		}
		return s.cmp(op == unix.NFT_CMP_NEQ, v, nil)
	case "range":
		sreg, _ := x.get(unix.NFTA_RANGE_SREG)
		op, _ := x.get(unix.NFTA_RANGE_OP)
		from, fok := nestedValue(x.data[unix.NFTA_RANGE_FROM_DATA])
		to, tok := nestedValue(x.data[unix.NFTA_RANGE_TO_DATA])
		if sreg != 1 || !fok || !tok || (op != unix.NFT_CMP_EQ && op != unix.NFT_CMP_NEQ) {
			return errNoDecoder
		}
		return s.cmp(op == unix.NFT_CMP_NEQ, from, to)
	case "immediate":
		dreg, _ := x.get(unix.NFTA_IMMEDIATE_DREG)
		d := x.data[unix.NFTA_IMMEDIATE_DATA]
		if dreg != unix.NFT_REG_VERDICT {
			v, ok := nestedValue(d)
			if !ok || dreg >= uint32(len(s.imm)) {
				return errNoDecoder
			}
			s.imm[dreg] = v
			return nil
		}
		return s.verdict(d)
	case "masq":
		if _, p := x.get(unix.NFTA_MASQ_REG_PROTO_MIN); p {
			return errNoDecoder
		}
		flags, _ := x.get(unix.NFTA_MASQ_FLAGS)
		if flags&^(natRandom|natRandomFully) != 0 {
			return errNoDecoder
		}
		t := " -j MASQUERADE"
		if flags&natRandom != 0 {
			t += " --random"
		}
		if flags&natRandomFully != 0 {
			t += " --random-fully"
		}
		return s.setTarget(t)
	case "nat":
		return s.nativeNAT(&x)
	case "reject":
		typ, _ := x.get(unix.NFTA_REJECT_TYPE)
		var code uint8
		if c := x.data[unix.NFTA_REJECT_ICMP_CODE]; len(c) == 1 {
			code = c[0]
		}
		with, ok := nativeRejectName(typ, code, s.ipv6)
		if !ok {
			return errNoDecoder
		}
		return s.setTarget(" -j REJECT --reject-with " + with)
	}
	return errNoDecoder
}

func (s *ruleState) xt(kind string, data []byte) error {
	if kind == "match" {
		n, rev, info, err := decodeXT(data, unix.NFTA_MATCH_NAME, unix.NFTA_MATCH_REV, unix.NFTA_MATCH_INFO)
		if err != nil {
			return err
		}
		text, err := xtMatchText(n, rev, info, s.ipv6, s.protoNum)
		if err != nil {
			s.matches = append(s.matches, ruleMatch{text: " -m " + n})
			return err
		}
		if n == "comment" {
			s.sawComment = true
		}
		s.matches = append(s.matches, ruleMatch{text: text})
		return nil
	}
	n, rev, info, err := decodeXT(data, unix.NFTA_TARGET_NAME, unix.NFTA_TARGET_REV, unix.NFTA_TARGET_INFO)
	if err != nil {
		return err
	}
	text, err := xtTargetText(n, rev, info, s.ipv6)
	if err != nil {
		_ = s.setTarget(" -j " + n)
		return err
	}
	return s.setTarget(" -j " + n + text)
}

func (s *ruleState) setTarget(t string) error {
	if s.target != "" {
		return fmt.Errorf("second verdict")
	}
	s.target = t
	return nil
}

// verdict reads an immediate's NFTA_DATA_VERDICT.
func (s *ruleState) verdict(d []byte) error {
	var code int32
	var chain string
	found := false
	a := nlAttrs{b: d}
	for t, v, ok := a.next(); ok; t, v, ok = a.next() {
		if t != unix.NFTA_DATA_VERDICT {
			continue
		}
		found = true
		va := nlAttrs{b: v}
		for vt, vv, ok := va.next(); ok; vt, vv, ok = va.next() {
			switch vt {
			case unix.NFTA_VERDICT_CODE:
				c, ok := be32(vv)
				if !ok {
					return errNoDecoder
				}
				code = int32(c)
			case unix.NFTA_VERDICT_CHAIN:
				chain = nlString(vv)
			}
		}
		if err := va.err(); err != nil {
			return err
		}
	}
	if err := a.err(); err != nil {
		return err
	}
	if !found {
		return errNoDecoder
	}
	switch code {
	case 1: // NF_ACCEPT
		return s.setTarget(" -j ACCEPT")
	case 0: // NF_DROP
		return s.setTarget(" -j DROP")
	case unix.NFT_RETURN:
		return s.setTarget(" -j RETURN")
	case unix.NFT_JUMP, unix.NFT_GOTO:
		if chain == "" {
			return errNoDecoder
		}
		if code == unix.NFT_GOTO {
			return s.setTarget(" -g " + chain)
		}
		return s.setTarget(" -j " + chain)
	}
	return errNoDecoder
}

func allZero(b []byte) bool {
	for _, c := range b {
		if c != 0 {
			return false
		}
	}
	return true
}

func bang(neg bool) string {
	if neg {
		return " !"
	}
	return ""
}

// cmp interprets a comparison of register 1 (to is set for a range).
func (s *ruleState) cmp(neg bool, data, to []byte) error {
	r := s.reg
	s.reg = regSource{}
	addrOff, addrLen := uint32(12), uint32(4)
	protoOff := uint32(9)
	if s.ipv6 {
		addrOff, addrLen, protoOff = 8, 16, 6
	}
	switch {
	case r.kind == regMeta && r.meta == unix.NFT_META_L4PROTO && !r.masked && to == nil && len(data) == 1,
		r.kind == regPayload && r.base == payloadNetwork && r.off == protoOff && r.len == 1 && !r.masked && to == nil && len(data) == 1:
		if s.proto != "" {
			return errNoDecoder
		}
		s.protoNum = int(data[0])
		s.proto = bang(neg) + " -p " + protoName(data[0])
		return nil
	case r.kind == regPayload && r.base == payloadNetwork && (r.off == addrOff || r.off == addrOff+addrLen) && to == nil:
		a, err := prefixText(data, r, addrLen)
		if err != nil {
			return err
		}
		if r.off == addrOff {
			if s.src != "" {
				return errNoDecoder
			}
			s.src = bang(neg) + " -s " + a
		} else {
			if s.dst != "" {
				return errNoDecoder
			}
			s.dst = bang(neg) + " -d " + a
		}
		return nil
	case r.kind == regMeta && (r.meta == unix.NFT_META_IIFNAME || r.meta == unix.NFT_META_OIFNAME) && !r.masked && to == nil:
		name := ifaceText(data)
		if name == "" {
			return errNoDecoder
		}
		if r.meta == unix.NFT_META_IIFNAME {
			if s.in != "" {
				return errNoDecoder
			}
			s.in = bang(neg) + " -i " + name
		} else {
			if s.out != "" {
				return errNoDecoder
			}
			s.out = bang(neg) + " -o " + name
		}
		return nil
	case r.kind == regPayload && r.base == payloadTransport && r.off == 0 && r.len == 4 && !r.masked && len(data) == 4 && !neg && to == nil:
		// --sport and --dport together, as one load of both ports.
		s.reg = regSource{kind: regPayload, base: r.base, off: 0, len: 2}
		if err := s.cmp(false, data[:2], nil); err != nil {
			return err
		}
		s.reg = regSource{kind: regPayload, base: r.base, off: 2, len: 2}
		return s.cmp(false, data[2:], nil)
	case r.kind == regPayload && r.base == payloadTransport && (r.off == 0 || r.off == 2) && r.len == 2 && !r.masked && len(data) == 2:
		var pname string
		switch s.protoNum {
		case unix.IPPROTO_TCP:
			pname = "tcp"
		case unix.IPPROTO_UDP:
			pname = "udp"
		default:
			return errNoDecoder
		}
		port := strconv.Itoa(int(binary.BigEndian.Uint16(data)))
		if to != nil {
			if len(to) != 2 {
				return errNoDecoder
			}
			port += ":" + strconv.Itoa(int(binary.BigEndian.Uint16(to)))
		}
		m := s.portMatch(pname)
		if r.off == 0 {
			if m.sport != "" {
				return errNoDecoder
			}
			m.sport = bang(neg) + " --sport " + port
		} else {
			if m.dport != "" {
				return errNoDecoder
			}
			m.dport = bang(neg) + " --dport " + port
		}
		return nil
	case r.kind == regPayload && r.base == payloadTransport && r.off == 13 && r.len == 1 && to == nil:
		return s.nativeTCPFlags(r, neg, data)
	case r.kind == regMeta && r.meta == unix.NFT_META_MARK && to == nil && len(data) == 4:
		t := " -m mark" + bang(neg) + " --mark " + hex32(binary.NativeEndian.Uint32(data))
		if r.masked {
			if len(r.mask) != 4 {
				return errNoDecoder
			}
			if m := binary.NativeEndian.Uint32(r.mask); m != 0xffffffff {
				t += "/" + hex32(m)
			}
		}
		s.matches = append(s.matches, ruleMatch{text: t})
		return nil
	}
	return errNoDecoder
}

func hex32(v uint32) string { return "0x" + strconv.FormatUint(uint64(v), 16) }

// prefixText prints an address match as iptables does: addr/len for a
// contiguous mask, addr/mask otherwise. A byte-aligned prefix is a shorter
// payload load without a mask.
func prefixText(data []byte, r regSource, full uint32) (string, error) {
	if r.len == 0 || r.len > full || int(r.len) != len(data) {
		return "", errNoDecoder
	}
	addr := make([]byte, full)
	copy(addr, data)
	mask := make([]byte, full)
	for i := range r.len {
		mask[i] = 0xff
	}
	if r.masked {
		if len(r.mask) != int(r.len) {
			return "", errNoDecoder
		}
		copy(mask, r.mask)
	}
	a, _ := netip.AddrFromSlice(addr)
	ones, contiguous := maskOnes(mask)
	if contiguous {
		return a.String() + "/" + strconv.Itoa(ones), nil
	}
	m, _ := netip.AddrFromSlice(mask)
	return a.String() + "/" + m.String(), nil
}

func maskOnes(m []byte) (int, bool) {
	ones := 0
	seenZero := false
	for _, b := range m {
		for i := 7; i >= 0; i-- {
			if b&(1<<i) != 0 {
				if seenZero {
					return 0, false
				}
				ones++
			} else {
				seenZero = true
			}
		}
	}
	return ones, true
}

// ifaceText is an interface name as compared: with its NUL an exact name,
// without one a prefix ("eth+").
func ifaceText(data []byte) string {
	if len(data) == 0 || len(data) > unix.IFNAMSIZ {
		return ""
	}
	if i := strings.IndexByte(string(data), 0); i >= 0 {
		if i == 0 {
			return ""
		}
		return string(data[:i])
	}
	return string(data) + "+"
}

// protoName names a protocol as iptables-save does (its own table first,
// then the number).
func protoName(p byte) string {
	switch p {
	case 6:
		return "tcp"
	case 17:
		return "udp"
	case 132:
		return "sctp"
	case 136:
		return "udplite"
	case 1:
		return "icmp"
	case 58:
		return "ipv6-icmp"
	case 50:
		return "esp"
	case 51:
		return "ah"
	case 135:
		return "mh"
	}
	return strconv.Itoa(int(p))
}

// decodeXT reads a match or target expression's name, revision and info.
func decodeXT(b []byte, nameT, revT, infoT uint16) (string, uint32, []byte, error) {
	var name string
	var rev uint32
	var info []byte
	a := nlAttrs{b: b}
	for t, v, ok := a.next(); ok; t, v, ok = a.next() {
		switch t {
		case nameT:
			name = nlString(v)
		case revT:
			r, ok := be32(v)
			if !ok {
				return "", 0, nil, fmt.Errorf("bad revision")
			}
			rev = r
		case infoT:
			info = v
		}
	}
	if err := a.err(); err != nil {
		return "", 0, nil, err
	}
	if name == "" {
		return "", 0, nil, fmt.Errorf("no name")
	}
	return name, rev, info, nil
}

// saveString quotes a value as iptables-save does (xtables_save_string),
// with its leading space.
func saveString(v string) string {
	plain := v != ""
	for i := 0; i < len(v); i++ {
		c := v[i]
		if !(c == '_' || c == '-' || c >= '0' && c <= '9' || c >= 'a' && c <= 'z' || c >= 'A' && c <= 'Z') {
			plain = false
			break
		}
	}
	if plain {
		return " " + v
	}
	var b strings.Builder
	b.WriteString(` "`)
	for i := 0; i < len(v); i++ {
		if v[i] == '"' || v[i] == '\\' || v[i] == '\'' {
			b.WriteByte('\\')
		}
		b.WriteByte(v[i])
	}
	b.WriteByte('"')
	return b.String()
}

// cString is a NUL-terminated C string field.
func cString(b []byte) string {
	if i := strings.IndexByte(string(b), 0); i >= 0 {
		return string(b[:i])
	}
	return string(b)
}

var errXTSize = fmt.Errorf("unexpected info size")

func need(info []byte, n int) error {
	if len(info) < n {
		return errXTSize
	}
	return nil
}

var ne = binary.NativeEndian

// xtMatchText prints an xtables-compat match as iptables-nft-save does,
// from its kernel struct (host byte order, x86-64/arm64 layout).
func xtMatchText(name string, rev uint32, info []byte, ipv6 bool, proto int) (string, error) {
	switch {
	case name == "comment" && rev == 0:
		if err := need(info, 256); err != nil {
			return "", err
		}
		return " -m comment --comment" + saveString(cString(info[:256])), nil
	case (name == "tcp" || name == "udp") && rev == 0:
		return tcpUDPText(name, info)
	case name == "statistic" && rev == 0:
		if err := need(info, 16); err != nil {
			return "", err
		}
		mode, flags := ne.Uint16(info[0:]), ne.Uint16(info[2:])
		if flags&^1 != 0 {
			return "", errNoDecoder
		}
		inv := bang(flags&1 != 0)
		switch mode {
		case 0:
			p := float64(ne.Uint32(info[4:])) / 0x80000000
			return " -m statistic --mode random" + inv + " --probability " + strconv.FormatFloat(p, 'f', 11, 64), nil
		case 1:
			every, packet := ne.Uint32(info[4:]), ne.Uint32(info[8:])
			return " -m statistic --mode nth" + inv + " --every " + strconv.FormatUint(uint64(every)+1, 10) +
				" --packet " + strconv.FormatUint(uint64(packet), 10), nil
		}
		return "", errNoDecoder
	case name == "mark" && rev == 1:
		if err := need(info, 9); err != nil {
			return "", err
		}
		mark, mask, inv := ne.Uint32(info[0:]), ne.Uint32(info[4:]), info[8]
		t := " -m mark" + bang(inv != 0) + " --mark " + hex32(mark)
		if mask != 0xffffffff {
			t += "/" + hex32(mask)
		}
		return t, nil
	case name == "conntrack":
		return conntrackText(rev, info, ipv6)
	case name == "state" && rev == 0:
		return stateText(info)
	case name == "addrtype" && rev == 1:
		if err := need(info, 8); err != nil {
			return "", err
		}
		src, dst, flags := ne.Uint16(info[0:]), ne.Uint16(info[2:]), ne.Uint32(info[4:])
		if flags&^0xf != 0 {
			return "", errNoDecoder
		}
		t := " -m addrtype"
		if src != 0 {
			t += bang(flags&1 != 0) + " --src-type " + addrTypeNames(src)
		}
		if dst != 0 {
			t += bang(flags&2 != 0) + " --dst-type " + addrTypeNames(dst)
		}
		if flags&4 != 0 {
			t += " --limit-iface-in"
		}
		if flags&8 != 0 {
			t += " --limit-iface-out"
		}
		return t, nil
	case name == "recent" && rev == 1:
		if err := need(info, 228); err != nil {
			return "", err
		}
		seconds, hits, set, inv, side := ne.Uint32(info[0:]), ne.Uint32(info[4:]), info[8], info[9], info[210]
		if set&^0x3f != 0 || side > 1 {
			return "", errNoDecoder
		}
		t := " -m recent" + bang(inv != 0)
		for _, f := range []struct {
			bit  byte
			name string
		}{{2, " --set"}, {1, " --rcheck"}, {4, " --update"}, {8, " --remove"}} {
			if set&f.bit != 0 {
				t += f.name
			}
		}
		if seconds != 0 {
			t += " --seconds " + strconv.FormatUint(uint64(seconds), 10)
		}
		if set&32 != 0 {
			t += " --reap"
		}
		if hits != 0 {
			t += " --hitcount " + strconv.FormatUint(uint64(hits), 10)
		}
		if set&16 != 0 {
			t += " --rttl"
		}
		t += " --name " + cString(info[10:210])
		if ipv6 {
			a, _ := netip.AddrFromSlice(info[212:228])
			t += " --mask " + a.String()
		} else {
			a, _ := netip.AddrFromSlice(info[212:216])
			t += " --mask " + a.String()
		}
		if side == 0 {
			t += " --rsource"
		} else {
			t += " --rdest"
		}
		return t, nil
	case name == "nfacct" && rev <= 1:
		// kube-proxy counts the invalid packets it drops in KUBE-FORWARD.
		if err := need(info, 32); err != nil {
			return "", err
		}
		return " -m nfacct --nfacct-name " + saveString(cString(info[:32])), nil
	case name == "multiport" && rev == 1:
		if err := need(info, 48); err != nil {
			return "", err
		}
		flags, count, inv := info[0], int(info[1]), info[47]
		if count > 15 || flags > 2 {
			return "", errNoDecoder
		}
		t := " -m multiport" + bang(inv != 0) + " " + [...]string{"--sports", "--dports", "--ports"}[flags] + " "
		for i := 0; i < count; i++ {
			if i > 0 {
				t += ","
			}
			t += strconv.Itoa(int(ne.Uint16(info[2+2*i:])))
			if info[32+i] != 0 && i+1 < count {
				i++
				t += ":" + strconv.Itoa(int(ne.Uint16(info[2+2*i:])))
			}
		}
		return t, nil
	}
	return "", errNoDecoder
}

var rtnNames = [...]string{"UNSPEC", "UNICAST", "LOCAL", "BROADCAST", "ANYCAST", "MULTICAST", "BLACKHOLE", "UNREACHABLE", "PROHIBIT", "THROW", "NAT", "XRESOLVE"}

func addrTypeNames(m uint16) string {
	var out []string
	for i, n := range rtnNames {
		if m&(1<<i) != 0 {
			out = append(out, n)
		}
	}
	if m>>len(rtnNames) != 0 {
		out = append(out, "0x"+strconv.FormatUint(uint64(m), 16))
	}
	return strings.Join(out, ",")
}

// natRange is nf_nat_range2 (or the older layouts mapped onto it).
type natRange struct {
	flags            uint32
	minAddr, maxAddr netip.Addr
	minPort, maxPort uint16
	basePort         uint16
}

const (
	natMapIPs       = 1
	natProtoSpec    = 2
	natRandom       = 4
	natPersistent   = 8
	natRandomFully  = 16
	natProtoOffset  = 32
	natKnownFlagSet = natMapIPs | natProtoSpec | natRandom | natPersistent | natRandomFully | natProtoOffset
)

func decodeNATRange(rev uint32, info []byte, ipv6 bool) (natRange, error) {
	var r natRange
	if !ipv6 && rev == 0 { // nf_nat_ipv4_multi_range_compat
		if err := need(info, 20); err != nil {
			return r, err
		}
		if ne.Uint32(info[0:]) != 1 {
			return r, errNoDecoder
		}
		r.flags = ne.Uint32(info[4:])
		r.minAddr, _ = netip.AddrFromSlice(info[8:12])
		r.maxAddr, _ = netip.AddrFromSlice(info[12:16])
		r.minPort, r.maxPort = binary.BigEndian.Uint16(info[16:]), binary.BigEndian.Uint16(info[18:])
		return r, nil
	}
	if rev == 0 || rev > 2 {
		return r, errNoDecoder
	}
	n := 40
	if rev == 2 {
		n = 42
	}
	if err := need(info, n); err != nil {
		return r, err
	}
	r.flags = ne.Uint32(info[0:])
	if ipv6 {
		r.minAddr, _ = netip.AddrFromSlice(info[4:20])
		r.maxAddr, _ = netip.AddrFromSlice(info[20:36])
	} else {
		r.minAddr, _ = netip.AddrFromSlice(info[4:8])
		r.maxAddr, _ = netip.AddrFromSlice(info[20:24])
	}
	r.minPort, r.maxPort = binary.BigEndian.Uint16(info[36:]), binary.BigEndian.Uint16(info[38:])
	if rev == 2 {
		r.basePort = binary.BigEndian.Uint16(info[40:])
	}
	return r, nil
}

// natText prints a DNAT/SNAT range and flags as libxt_NAT saves them.
func natText(opt string, r natRange, ipv6 bool) (string, error) {
	if r.flags&^natKnownFlagSet != 0 {
		return "", errNoDecoder
	}
	var rng string
	brackets := ipv6 && r.flags&natProtoSpec != 0
	addr := func(a netip.Addr) string {
		if brackets {
			return "[" + a.String() + "]"
		}
		return a.String()
	}
	if r.flags&natMapIPs != 0 {
		rng = addr(r.minAddr)
		if r.minAddr != r.maxAddr {
			rng += "-" + addr(r.maxAddr)
		}
	}
	if r.flags&natProtoSpec != 0 {
		rng += ":" + strconv.Itoa(int(r.minPort))
		if r.maxPort != r.minPort {
			rng += "-" + strconv.Itoa(int(r.maxPort))
		}
		if r.flags&natProtoOffset != 0 {
			rng += "/" + strconv.Itoa(int(r.basePort))
		}
	}
	t := ""
	if rng != "" {
		t = " " + opt + " " + rng
	}
	if r.flags&natRandom != 0 {
		t += " --random"
	}
	if r.flags&natPersistent != 0 {
		t += " --persistent"
	}
	if r.flags&natRandomFully != 0 {
		t += " --random-fully"
	}
	return t, nil
}

// xtTargetText prints an xtables-compat target's options.
func xtTargetText(name string, rev uint32, info []byte, ipv6 bool) (string, error) {
	switch name {
	case "DNAT", "SNAT":
		r, err := decodeNATRange(rev, info, ipv6)
		if err != nil {
			return "", err
		}
		opt := "--to-destination"
		if name == "SNAT" {
			opt = "--to-source"
		}
		return natText(opt, r, ipv6)
	case "MASQUERADE":
		if rev != 0 {
			return "", errNoDecoder
		}
		r, err := decodeNATRange(map[bool]uint32{false: 0, true: 1}[ipv6], info, ipv6)
		if err != nil {
			return "", err
		}
		if r.flags&^(natProtoSpec|natRandom|natRandomFully) != 0 {
			return "", errNoDecoder
		}
		t := ""
		if r.flags&natProtoSpec != 0 {
			t += " --to-ports " + strconv.Itoa(int(r.minPort))
			if r.maxPort != r.minPort {
				t += "-" + strconv.Itoa(int(r.maxPort))
			}
		}
		if r.flags&natRandom != 0 {
			t += " --random"
		}
		if r.flags&natRandomFully != 0 {
			t += " --random-fully"
		}
		return t, nil
	case "MARK":
		if rev != 2 {
			return "", errNoDecoder
		}
		if err := need(info, 8); err != nil {
			return "", err
		}
		return " --set-xmark " + hex32(ne.Uint32(info[0:])) + "/" + hex32(ne.Uint32(info[4:])), nil
	case "REJECT":
		if rev != 0 {
			return "", errNoDecoder
		}
		if err := need(info, 4); err != nil {
			return "", err
		}
		w := ne.Uint32(info)
		names := rejectNames4[:]
		if ipv6 {
			names = rejectNames6[:]
		}
		if int(w) >= len(names) || names[w] == "" {
			return "", errNoDecoder
		}
		return " --reject-with " + names[w], nil
	}
	return "", errNoDecoder
}

var rejectNames4 = [...]string{"icmp-net-unreachable", "icmp-host-unreachable", "icmp-proto-unreachable", "icmp-port-unreachable",
	"", "icmp-net-prohibited", "icmp-host-prohibited", "tcp-reset", "icmp-admin-prohibited"}

var rejectNames6 = [...]string{"icmp6-no-route", "icmp6-adm-prohibited", "icmp6-not-neighbor", "icmp6-addr-unreachable",
	"icmp6-port-unreachable", "", "tcp-reset", "icmp6-policy-fail", "icmp6-reject-route"}

// nativeRejectName maps an nft reject expression to --reject-with.
func nativeRejectName(typ uint32, code uint8, ipv6 bool) (string, bool) {
	switch typ {
	case unix.NFT_REJECT_TCP_RST:
		return "tcp-reset", true
	case unix.NFT_REJECT_ICMP_UNREACH:
		if ipv6 {
			m := map[uint8]string{0: "icmp6-no-route", 1: "icmp6-adm-prohibited", 3: "icmp6-addr-unreachable", 4: "icmp6-port-unreachable",
				5: "icmp6-policy-fail", 6: "icmp6-reject-route"}
			n, ok := m[code]
			return n, ok
		}
		m := map[uint8]string{0: "icmp-net-unreachable", 1: "icmp-host-unreachable", 2: "icmp-proto-unreachable", 3: "icmp-port-unreachable",
			9: "icmp-net-prohibited", 10: "icmp-host-prohibited", 13: "icmp-admin-prohibited"}
		n, ok := m[code]
		return n, ok
	}
	return "", false
}

// nativeNAT prints an nft nat expression (addresses and ports loaded into
// registers by immediates before it) as the DNAT/SNAT target.
func (s *ruleState) nativeNAT(x *exprAttrs) error {
	var r natRange
	reg := func(n uint32, size int) ([]byte, bool) {
		if n >= uint32(len(s.imm)) {
			return nil, false
		}
		v := s.imm[n]
		return v, len(v) == size
	}
	alen := 4
	if s.ipv6 {
		alen = 16
	}
	if amin, ok := x.get(unix.NFTA_NAT_REG_ADDR_MIN); ok {
		v, ok := reg(amin, alen)
		if !ok {
			return errNoDecoder
		}
		r.minAddr, _ = netip.AddrFromSlice(v)
		r.maxAddr = r.minAddr
		if amax, ok := x.get(unix.NFTA_NAT_REG_ADDR_MAX); ok {
			if v, ok = reg(amax, alen); !ok {
				return errNoDecoder
			}
			r.maxAddr, _ = netip.AddrFromSlice(v)
		}
		r.flags |= natMapIPs
	}
	if pmin, ok := x.get(unix.NFTA_NAT_REG_PROTO_MIN); ok {
		v, ok := reg(pmin, 2)
		if !ok {
			return errNoDecoder
		}
		r.minPort = binary.BigEndian.Uint16(v)
		r.maxPort = r.minPort
		if pmax, ok := x.get(unix.NFTA_NAT_REG_PROTO_MAX); ok {
			if v, ok = reg(pmax, 2); !ok {
				return errNoDecoder
			}
			r.maxPort = binary.BigEndian.Uint16(v)
		}
		r.flags |= natProtoSpec
	}
	flags, _ := x.get(unix.NFTA_NAT_FLAGS)
	if flags&^(natMapIPs|natProtoSpec|natRandom|natRandomFully|natPersistent) != 0 {
		return errNoDecoder
	}
	r.flags |= flags & (natRandom | natRandomFully | natPersistent)
	typ, _ := x.get(unix.NFTA_NAT_TYPE)
	name, opt := " -j DNAT", "--to-destination"
	switch typ {
	case unix.NFT_NAT_SNAT:
		name, opt = " -j SNAT", "--to-source"
	case unix.NFT_NAT_DNAT:
	default:
		return errNoDecoder
	}
	t, err := natText(opt, r, s.ipv6)
	if err != nil {
		return err
	}
	return s.setTarget(name + t)
}
