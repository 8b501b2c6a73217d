package dataplane

import (
	"strconv"
	"strings"

	"golang.org/x/sys/unix"
)

// The tcp and udp matches: ports, --tcp-option and --tcp-flags, printed in
// libxt_tcp's order (sport, dport, option, flags) whichever form
// iptables-nft wrote them in.

// tcpFlagBits are the flags --tcp-flags names; ALL is their union.
const tcpFlagBits = 0x3f

// tcpFlagNames prints a flag set as libxt_tcp does. iptables-nft-save
// cannot print other bits (ECE, CWR: it crashed on them here), so they
// are no decoder's business.
func tcpFlagNames(b *strings.Builder, f uint8) {
	if f == 0 {
		b.WriteString("NONE")
		return
	}
	first := true
	for i, n := range [...]string{"FIN", "SYN", "RST", "PSH", "ACK", "URG"} {
		if f&(1<<i) != 0 {
			if !first {
				b.WriteByte(',')
			}
			b.WriteString(n)
			first = false
		}
	}
}

// tcpFlagsText is " [!] --tcp-flags MASK CMP", or "" where libxt_tcp
// prints nothing (no mask, not inverted).
func tcpFlagsText(mask, cmp uint8, neg bool) (string, error) {
	if mask&^tcpFlagBits != 0 || cmp&^tcpFlagBits != 0 {
		return "", errNoDecoder
	}
	if mask == 0 && !neg {
		return "", nil
	}
	var b strings.Builder
	b.Grow(48)
	if neg {
		b.WriteString(" !")
	}
	b.WriteString(" --tcp-flags ")
	tcpFlagNames(&b, mask)
	b.WriteByte(' ')
	tcpFlagNames(&b, cmp)
	return b.String(), nil
}

// tcpUDPText decodes xt_tcp / xt_udp. iptables-nft 1.8.9 writes ports and
// flags natively and falls back to this match for --tcp-option.
func tcpUDPText(name string, info []byte) (string, error) {
	if err := need(info, 9); err != nil {
		return "", err
	}
	spts := [2]uint16{ne.Uint16(info[0:]), ne.Uint16(info[2:])}
	dpts := [2]uint16{ne.Uint16(info[4:]), ne.Uint16(info[6:])}
	inv := info[8]
	var option, flgMask, flgCmp uint8
	if name == "tcp" {
		if err := need(info, 12); err != nil {
			return "", err
		}
		option, flgMask, flgCmp, inv = info[8], info[9], info[10], info[11]
		if inv&^0xf != 0 {
			return "", errNoDecoder
		}
	} else if inv&^3 != 0 {
		return "", errNoDecoder
	}
	if spts == [2]uint16{0, 0xffff} && dpts == [2]uint16{0, 0xffff} && option == 0 && flgMask == 0 && inv == 0 {
		// kube-proxy's "-p tcp -m tcp" in every endpoint's DNAT rule
		// (50,000 at 10,000 Services): no allocation.
		if name == "tcp" {
			return " -m tcp", nil
		}
		return " -m udp", nil
	}
	var b strings.Builder
	b.Grow(32)
	b.WriteString(" -m ")
	b.WriteString(name)
	ports := func(opt string, p [2]uint16, neg bool) {
		if p[0] == 0 && p[1] == 0xffff {
			return
		}
		b.WriteString(bang(neg))
		b.WriteString(" --")
		b.WriteString(opt)
		b.WriteByte(' ')
		b.WriteString(strconv.Itoa(int(p[0])))
		if p[0] != p[1] {
			b.WriteByte(':')
			b.WriteString(strconv.Itoa(int(p[1])))
		}
	}
	ports("sport", spts, inv&1 != 0)
	ports("dport", dpts, inv&2 != 0)
	if option != 0 || inv&8 != 0 {
		b.WriteString(bang(inv&8 != 0))
		b.WriteString(" --tcp-option ")
		b.WriteString(strconv.Itoa(int(option)))
	}
	f, err := tcpFlagsText(flgMask, flgCmp, inv&4 != 0)
	if err != nil {
		return "", err
	}
	b.WriteString(f)
	return b.String(), nil
}

// portMatch is the rule's native tcp or udp match, which every native
// port or flags comparison of that protocol adds to (iptables-nft-save
// prints them as one -m tcp).
func (s *ruleState) portMatch(pname string) *ruleMatch {
	for i := range s.matches {
		if s.matches[i].proto == pname {
			return &s.matches[i]
		}
	}
	s.matches = append(s.matches, ruleMatch{proto: pname})
	return &s.matches[len(s.matches)-1]
}

// nativeTCPFlags is iptables-nft's --tcp-flags: the flags byte (transport
// header offset 13) masked, compared equal (or unequal for "!"). Without a
// mask iptables-nft-save 1.8.9 crashes, so that form stays undecoded.
func (s *ruleState) nativeTCPFlags(r regSource, neg bool, data []byte) error {
	if s.protoNum != unix.IPPROTO_TCP || !r.masked || len(r.mask) != 1 || len(data) != 1 {
		return errNoDecoder
	}
	m := s.portMatch("tcp")
	if m.text != "" {
		return errNoDecoder
	}
	f, err := tcpFlagsText(r.mask[0], data[0], neg)
	if err != nil {
		return err
	}
	m.text = f
	return nil
}
