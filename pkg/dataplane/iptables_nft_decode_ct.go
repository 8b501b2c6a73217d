package dataplane

import (
	"errors"
	"net/netip"
	"strconv"
	"strings"
)

// The xt conntrack match (and the state match, which iptables writes as
// conntrack with a flag), printed as libxt_conntrack saves it. Layouts are
// the kernel's xt_conntrack_mtinfo1/2/3: eight 16-byte addresses (orig
// src/dst, reply src/dst, each address then mask), expires, l4proto, four
// ports, the flag words, then the state and status masks.

// match_flags bits (XT_CONNTRACK_*).
const (
	ctState = 1 << iota
	ctProto
	ctOrigSrc
	ctOrigDst
	ctReplSrc
	ctReplDst
	ctStatus
	ctExpires
	ctOrigSrcPort
	ctOrigDstPort
	ctReplSrcPort
	ctReplDstPort
	ctDirection
	ctStateAlias

	ctKnownFlags = ctStateAlias<<1 - 1
	// state bits: INVALID, ESTABLISHED, RELATED, NEW, SNAT, DNAT, UNTRACKED.
	ctKnownStates = 1 | 2 | 4 | 8 | 1<<6 | 1<<7 | 1<<8
	// status bits: IPS_EXPECTED, SEEN_REPLY, ASSURED, CONFIRMED.
	ctKnownStatus = 0xf
)

var errCTOldLayout = errors.New("conntrack rev 1/2 ports or rev 1 status: iptables-nft-save 1.8.9 misprints them")

// conntrackText decodes conntrack rev 1, 2 or 3 into " -m conntrack ..."
// (or " -m state ..."). Options print in libxt_conntrack's order, not the
// order they were given in. One allocation: the line runs on every rule.
func conntrackText(rev uint32, info []byte, ipv6 bool) (string, error) {
	var size int
	switch rev {
	case 1:
		size = 152
	case 2:
		size = 154
	case 3:
		size = 162
	default:
		return "", errNoDecoder
	}
	if err := need(info, size); err != nil {
		return "", err
	}
	flags, inv := ne.Uint16(info[146:]), ne.Uint16(info[148:])
	var state, status uint16
	if rev == 1 {
		state, status = uint16(info[150]), uint16(info[151])
	} else {
		state, status = ne.Uint16(info[150:]), ne.Uint16(info[152:])
	}
	if flags&^ctKnownFlags != 0 || inv&^(ctKnownFlags&^ctStateAlias) != 0 ||
		state&^ctKnownStates != 0 || status&^ctKnownStatus != 0 {
		return "", errNoDecoder
	}
	// iptables-nft-save 1.8.9 prints every conntrack match with rev 3's
	// layout: rev 1/2 ports come out byte-swapped with a stray upper bound,
	// rev 1's 8-bit status (and a state next to a set status byte) as the
	// bytes after it. There is no line of its to match; not guessed.
	if rev < 3 && (flags&(ctOrigSrcPort|ctOrigDstPort|ctReplSrcPort|ctReplDstPort) != 0 ||
		rev == 1 && (flags&ctStatus != 0 || flags&ctState != 0 && status != 0)) {
		return "", errCTOldLayout
	}
	var b strings.Builder
	b.Grow(48)
	if flags&ctStateAlias != 0 {
		b.WriteString(" -m state")
	} else {
		b.WriteString(" -m conntrack")
	}
	opt := func(bit uint16, o string) bool {
		if flags&bit == 0 {
			return false
		}
		if inv&bit != 0 {
			b.WriteString(" !")
		}
		b.WriteString(" --")
		b.WriteString(o)
		return true
	}
	if flags&ctState != 0 {
		o := "ctstate"
		if flags&ctStateAlias != 0 {
			o = "state"
		}
		opt(ctState, o)
		if state != 0 {
			b.WriteByte(' ')
			writeCTStates(&b, state)
		}
	}
	if opt(ctProto, "ctproto") {
		b.WriteByte(' ')
		b.WriteString(strconv.Itoa(int(ne.Uint16(info[136:]))))
	}
	for i, o := range [...]string{"ctorigsrc", "ctorigdst", "ctreplsrc", "ctrepldst"} {
		if opt(ctOrigSrc<<i, o) {
			b.WriteByte(' ')
			ctAddr(&b, info[32*i:], ipv6)
		}
	}
	for i, o := range [...]string{"ctorigsrcport", "ctorigdstport", "ctreplsrcport", "ctrepldstport"} {
		if !opt(ctOrigSrcPort<<i, o) {
			continue
		}
		// rev 3: host order, with an upper bound (rev 1/2 returned above).
		lo, hi := ne.Uint16(info[138+2*i:]), ne.Uint16(info[154+2*i:])
		b.WriteByte(' ')
		b.WriteString(strconv.Itoa(int(lo)))
		if hi != 0 && hi != lo {
			b.WriteByte(':')
			b.WriteString(strconv.Itoa(int(hi)))
		}
	}
	if opt(ctStatus, "ctstatus") {
		b.WriteByte(' ')
		writeCTStatus(&b, status)
	}
	if opt(ctExpires, "ctexpire") {
		lo, hi := ne.Uint32(info[128:]), ne.Uint32(info[132:])
		b.WriteByte(' ')
		b.WriteString(strconv.FormatUint(uint64(lo), 10))
		if hi != lo {
			b.WriteByte(':')
			b.WriteString(strconv.FormatUint(uint64(hi), 10))
		}
	}
	if flags&ctDirection != 0 {
		if inv&ctDirection != 0 {
			b.WriteString(" --ctdir REPLY")
		} else {
			b.WriteString(" --ctdir ORIGINAL")
		}
	}
	return b.String(), nil
}

// ctAddr prints an address and its mask as xtables does numerically: no
// suffix for a host mask, /len for a prefix, /mask otherwise.
func ctAddr(b *strings.Builder, am []byte, v6 bool) {
	n := 4
	if v6 {
		n = 16
	}
	a, _ := netip.AddrFromSlice(am[:n])
	b.WriteString(a.String())
	mask := am[16 : 16+n]
	ones, contiguous := maskOnes(mask)
	switch {
	case contiguous && ones == 8*n:
	case contiguous:
		b.WriteByte('/')
		b.WriteString(strconv.Itoa(ones))
	default:
		m, _ := netip.AddrFromSlice(mask)
		b.WriteByte('/')
		b.WriteString(m.String())
	}
}

func writeCTStatus(b *strings.Builder, m uint16) {
	if m == 0 {
		b.WriteString("NONE")
		return
	}
	sep := ""
	for i, n := range [...]string{"EXPECTED", "SEEN_REPLY", "ASSURED", "CONFIRMED"} {
		if m&(1<<i) != 0 {
			b.WriteString(sep)
			b.WriteString(n)
			sep = ","
		}
	}
}

// writeCTStates prints a conntrack state mask in libxt_conntrack's order.
func writeCTStates(b *strings.Builder, m uint16) {
	sep := ""
	for _, s := range [...]struct {
		bit  uint16
		name string
	}{{1, "INVALID"}, {1 << 3, "NEW"}, {1 << 2, "RELATED"}, {1 << 1, "ESTABLISHED"}, {1 << 8, "UNTRACKED"}, {1 << 6, "SNAT"}, {1 << 7, "DNAT"}} {
		if m&s.bit != 0 {
			b.WriteString(sep)
			b.WriteString(s.name)
			sep = ","
		}
	}
}

// stateText decodes the old xt state match (rev 0, xt_state_info): one
// state mask, inverted by complementing it, printed bit by bit (so
// "! --state X" comes back as the other states). The kernel's UNTRACKED
// bit there is 1<<6, but iptables-nft-save 1.8.9 prints conntrack's 1<<8
// as UNTRACKED and ignores 1<<6: its line is only right when both are set
// or neither, and otherwise the rule is not decoded.
func stateText(info []byte) (string, error) {
	if err := need(info, 4); err != nil {
		return "", err
	}
	m := ne.Uint32(info)
	if m&(1<<6) != 0 != (m&(1<<8) != 0) {
		return "", errStateUntracked
	}
	var b strings.Builder
	b.WriteString(" -m state --state ")
	sep := ""
	for _, s := range [...]struct {
		bit  uint32
		name string
	}{{1, "INVALID"}, {1 << 3, "NEW"}, {1 << 2, "RELATED"}, {1 << 1, "ESTABLISHED"}, {1 << 8, "UNTRACKED"}} {
		if m&s.bit != 0 {
			b.WriteString(sep)
			b.WriteString(s.name)
			sep = ","
		}
	}
	return b.String(), nil
}

var errStateUntracked = errors.New("state rev 0 UNTRACKED: iptables-nft-save 1.8.9 misprints it")
