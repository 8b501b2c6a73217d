package dataplane

import (
	"context"
	"encoding/binary"
	"encoding/hex"
	"errors"
	"fmt"
	"net/netip"
	"strconv"
	"strings"
	"syscall"
	"time"

	"github.com/google/nftables/expr"
	"github.com/vishvananda/netlink/nl"
	"github.com/vishvananda/netns"
	"golang.org/x/sys/unix"
)

// NetlinkNFT reads nftables tables over nf_tables netlink, with no nft
// process. The kernel answers with CAP_NET_ADMIN in the namespace.
type NetlinkNFT struct {
	// NS is the network namespace; netns.None() means the agent's own.
	NS netns.NsHandle
}

// NFTSetInfo is what the decoder needs of one set or map.
type NFTSetInfo struct {
	Table, Name      string
	Flags            uint32
	KeyType, KeyLen  uint32
	DataType, DataLn uint32
}

func (s NFTSetInfo) isMap() bool { return s.Flags&unix.NFT_SET_MAP != 0 }
func (s NFTSetInfo) anon() bool  { return s.Flags&unix.NFT_SET_ANONYMOUS != 0 }

// NFTUnknown is a rule or element the native reader could not decode, kept
// with its raw netlink form so it is reported, never compared.
type NFTUnknown struct {
	// Where is "chain NAME", "map NAME" or "set NAME".
	Where string
	Why   string
	Raw   string // hex, capped
}

const nftRawMax = 256

func nftRaw(b []byte) string {
	if len(b) > nftRawMax {
		return hex.EncodeToString(b[:nftRawMax]) + "..."
	}
	return hex.EncodeToString(b)
}

// ListTable reads one table: chains, named maps and sets with their
// elements, and rules (DNAT targets and jumps), into the model nft -j gives.
func (n NetlinkNFT) ListTable(ctx context.Context, family, table string, into *NFTTable) (bool, error) {
	fam, ok := map[string]uint8{"ip": unix.NFPROTO_IPV4, "ip6": unix.NFPROTO_IPV6, "inet": unix.NFPROTO_INET}[family]
	if !ok {
		return false, fmt.Errorf("nftables netlink: unknown family %q", family)
	}
	open := func() (*nftReader, error) {
		s, err := nl.GetNetlinkSocketAt(n.NS, netns.None(), unix.NETLINK_NETFILTER)
		if err != nil {
			return nil, fmt.Errorf("nftables netlink: open socket: %w", err)
		}
		d := 30 * time.Second
		if dl, ok := ctx.Deadline(); ok {
			d = max(time.Until(dl), time.Millisecond)
		}
		tv := unix.NsecToTimeval(d.Nanoseconds())
		if err := errors.Join(s.SetReceiveTimeout(&tv), s.SetSendTimeout(&tv)); err != nil {
			s.Close()
			return nil, fmt.Errorf("nftables netlink: set timeout: %w", err)
		}
		return &nftReader{s: s, fam: fam, table: table, ctx: ctx}, nil
	}
	r, err := open()
	if err != nil {
		return false, err
	}
	defer r.s.Close()
	r.open = open
	tattr := nl.NewRtAttr(unix.NFTA_TABLE_NAME, nl.ZeroTerminated(table))
	if err := r.ask(unix.NFT_MSG_GETTABLE, unix.NLM_F_ACK, []*nl.RtAttr{tattr}, func([]byte) error { return nil }); err != nil {
		if errors.Is(err, unix.ENOENT) {
			return false, nil
		}
		return false, fmt.Errorf("nftables netlink: table %s %s: %w", family, table, err)
	}
	// kube-proxy rewrites its table on every sync: read again (as nft
	// does) when the ruleset changed under the read.
	for try := 0; ; try++ {
		g0, err := r.gen()
		if err != nil {
			return false, fmt.Errorf("nftables netlink: generation: %w", err)
		}
		t := NewNFTTable()
		t.Family, t.Name = family, table
		r.intr = false
		if err := r.read(t); err != nil {
			return false, fmt.Errorf("nftables netlink: table %s %s: %w", family, table, err)
		}
		g1, err := r.gen()
		if err != nil {
			return false, fmt.Errorf("nftables netlink: generation: %w", err)
		}
		if g0 == g1 && !r.intr {
			*into = *t
			return true, nil
		}
		if try == 4 {
			return false, fmt.Errorf("nftables netlink: table %s %s changed during each of 5 reads", family, table)
		}
	}
}

type nftReader struct {
	s     *nl.NetlinkSocket
	fam   uint8
	table string
	ctx   context.Context
	// intr is set when the kernel says a dump was interrupted by a change.
	intr bool
	// open gives another socket, for reading set elements in parallel.
	open func() (*nftReader, error)
	pid  uint32 // the socket's netlink port id
}

// gen returns the ruleset generation: a read is consistent when it is the
// same before and after.
func (r *nftReader) gen() (uint32, error) {
	var g uint32
	err := r.ask(unix.NFT_MSG_GETGEN, unix.NLM_F_ACK, nil, func(b []byte) error {
		it, err := nftAttrs(b)
		if err != nil {
			return err
		}
		for it.next() {
			if it.typ == unix.NFTA_GEN_ID {
				g = attrU32(it.data)
			}
		}
		return it.err
	})
	return g, err
}

func (r *nftReader) read(t *NFTTable) error {
	tab := func(typ int) []*nl.RtAttr { return []*nl.RtAttr{nl.NewRtAttr(typ, nl.ZeroTerminated(r.table))} }
	err := r.ask(unix.NFT_MSG_GETCHAIN, unix.NLM_F_DUMP, tab(unix.NFTA_CHAIN_TABLE), func(b []byte) error {
		// The kernel does not filter a chain dump by table: every table of
		// the family answers.
		table, name, err := DecodeNFTChain(b)
		if err == nil && name != "" && table == r.table {
			t.chain(name)
		}
		return err
	})
	if err != nil {
		return fmt.Errorf("chains: %w", err)
	}
	var sets []NFTSetInfo
	err = r.ask(unix.NFT_MSG_GETSET, unix.NLM_F_DUMP, tab(unix.NFTA_SET_TABLE), func(b []byte) error {
		s, err := DecodeNFTSet(b)
		// Maps, and named plain sets (cluster-ips...); anonymous plain
		// sets are rules' inline lists, which no comparison reads.
		if err == nil && s.Table == r.table && (s.isMap() || !s.anon()) {
			sets = append(sets, s)
		}
		return err
	})
	if err != nil {
		return fmt.Errorf("sets: %w", err)
	}
	// Anonymous maps are what rules look up (numgen DNAT): keep their values.
	anon := map[string][][]string{}
	res, err := r.elements(sets)
	if err != nil {
		return err
	}
	for i, s := range sets {
		kind := "map "
		if !s.isMap() {
			kind = "set "
		}
		for _, u := range res[i].unk {
			t.Unknown = append(t.Unknown, NFTUnknown{Where: kind + s.Name, Why: u.Why, Raw: u.Raw})
		}
		if !s.isMap() {
			st := &NFTSet{Name: s.Name, Elements: nftElements(len(res[i].els))}
			for _, e := range res[i].els {
				st.Elements = append(st.Elements, e.NFTElement)
			}
			t.Sets[s.Name] = st
			continue
		}
		if s.anon() {
			vals := make([][]string, 0, len(res[i].els))
			for _, e := range res[i].els {
				vals = append(vals, e.Data)
			}
			anon[s.Name] = vals
			continue
		}
		m := &NFTMap{Name: s.Name, Elements: nftElements(len(res[i].els))}
		for _, e := range res[i].els {
			m.Elements = append(m.Elements, e.NFTElement)
		}
		t.Maps[s.Name] = m
	}
	err = r.ask(unix.NFT_MSG_GETRULE, unix.NLM_F_DUMP, tab(unix.NFTA_RULE_TABLE), func(b []byte) error {
		rule, err := DecodeNFTRule(b, func(name string) [][]string { return anon[name] })
		if err != nil || rule.Table != r.table {
			return err
		}
		c := t.chain(rule.Chain)
		c.Rules++
		c.DNAT = append(c.DNAT, rule.DNAT...)
		c.Jumps = append(c.Jumps, rule.Jumps...)
		if rule.Unknown != nil {
			u := *rule.Unknown
			u.Where = "chain " + rule.Chain
			t.Unknown = append(t.Unknown, u)
		}
		return nil
	})
	if err != nil {
		return fmt.Errorf("rules: %w", err)
	}
	return nil
}

// nftElements is room for n elements; nil for none, as nft -j's reader has it.
func nftElements(n int) []NFTElement {
	if n == 0 {
		return nil
	}
	return make([]NFTElement, 0, n)
}

type nftSetElems struct {
	els []NFTSetElem
	unk []NFTUnknown
}

// nftElemWorkers bounds the sockets reading set elements at once: the
// kernel finds each set by walking the table's list of sets, so at 10,000
// Services (one anonymous map each) the dumps are CPU-bound in the kernel.
const nftElemWorkers = 2

// elements dumps the elements of each set, one dump per set as nft does.
func (r *nftReader) elements(sets []NFTSetInfo) ([]nftSetElems, error) {
	res := make([]nftSetElems, len(sets))
	next := make(chan int)
	errs := make(chan error, nftElemWorkers)
	for w := 0; w < nftElemWorkers; w++ {
		go func() {
			rd := r
			if w > 0 {
				var err error
				if rd, err = r.open(); err != nil {
					for range next {
					}
					errs <- err
					return
				}
				defer rd.s.Close()
			}
			var first error
			for i := range next {
				if first != nil {
					continue
				}
				s := sets[i]
				attrs := []*nl.RtAttr{nl.NewRtAttr(unix.NFTA_SET_ELEM_LIST_TABLE, nl.ZeroTerminated(r.table)),
					nl.NewRtAttr(unix.NFTA_SET_ELEM_LIST_SET, nl.ZeroTerminated(s.Name))}
				err := rd.ask(unix.NFT_MSG_GETSETELEM, unix.NLM_F_DUMP, attrs, func(b []byte) error {
					els, unk, err := decodeNFTSetElemsInto(s, b, res[i].els)
					res[i].els = els
					res[i].unk = append(res[i].unk, unk...)
					return err
				})
				if err != nil {
					first = fmt.Errorf("elements of %s: %w", s.Name, err)
				}
			}
			if w > 0 && rd.intr {
				first = errors.Join(first, errNFTInterrupted)
			}
			errs <- first
		}()
	}
	for i := range sets {
		next <- i
	}
	close(next)
	var all error
	for range nftElemWorkers {
		if err := <-errs; errors.Is(err, errNFTInterrupted) {
			r.intr = true
		} else if err != nil {
			all = errors.Join(all, err)
		}
	}
	return res, all
}

var errNFTInterrupted = errors.New("dump interrupted")

// ask sends one request and hands each reply's payload (nfgenmsg and
// attributes) to each as it arrives, so a dump is never held whole.
func (r *nftReader) ask(msg int, flags int, attrs []*nl.RtAttr, each func([]byte) error) error {
	if err := r.ctx.Err(); err != nil {
		return err
	}
	req := nl.NewNetlinkRequest(unix.NFNL_SUBSYS_NFTABLES<<8|msg, flags)
	req.AddData(&nl.Nfgenmsg{NfgenFamily: r.fam, Version: nl.NFNETLINK_V0})
	for _, a := range attrs {
		req.AddData(a)
	}
	if err := r.s.Send(req); err != nil {
		return err
	}
	seq := req.Seq
	if r.pid == 0 {
		pid, err := r.s.GetPid()
		if err != nil {
			return err
		}
		r.pid = pid
	}
	pid := r.pid
	var perr error
	for {
		msgs, from, err := r.s.Receive()
		if err != nil {
			return err
		}
		if from.Pid != nl.PidKernel {
			continue
		}
		for _, m := range msgs {
			if m.Header.Seq != seq || m.Header.Pid != pid {
				continue
			}
			if m.Header.Flags&unix.NLM_F_DUMP_INTR != 0 {
				r.intr = true
			}
			switch m.Header.Type {
			case unix.NLMSG_DONE:
				return perr
			case unix.NLMSG_ERROR:
				if len(m.Data) < 4 {
					return errors.New("short netlink error")
				}
				if e := int32(binary.NativeEndian.Uint32(m.Data)); e != 0 {
					return syscall.Errno(-e)
				}
				return perr // the ack of a non-dump request
			}
			if perr == nil {
				perr = each(m.Data)
			}
		}
		if flags&unix.NLM_F_DUMP == 0 && flags&unix.NLM_F_ACK == 0 {
			return perr
		}
		if err := r.ctx.Err(); err != nil {
			return err
		}
	}
}

// nftAttrs walks the attributes after the nfgenmsg header.
func nftAttrs(b []byte) (*nftAttrIter, error) {
	if len(b) < 4 {
		return nil, errors.New("short nf_tables message")
	}
	return &nftAttrIter{b: b[4:]}, nil
}

// nftAttrIter iterates netlink attributes (type, payload) with bounds checks.
type nftAttrIter struct {
	b    []byte
	typ  uint16
	data []byte
	err  error
}

func (it *nftAttrIter) next() bool {
	if len(it.b) == 0 {
		return false
	}
	if len(it.b) < 4 {
		it.err = errors.New("truncated attribute")
		return false
	}
	l := int(binary.NativeEndian.Uint16(it.b))
	if l < 4 || l > len(it.b) {
		it.err = fmt.Errorf("attribute length %d out of range", l)
		return false
	}
	it.typ = binary.NativeEndian.Uint16(it.b[2:]) & 0x3fff // drop NLA_F_NESTED and NLA_F_NET_BYTEORDER
	it.data = it.b[4:l]
	adv := (l + 3) &^ 3
	if adv > len(it.b) {
		adv = len(it.b)
	}
	it.b = it.b[adv:]
	return true
}

func nested(b []byte) *nftAttrIter { return &nftAttrIter{b: b} }

func attrString(b []byte) string {
	if i := strings.IndexByte(string(b), 0); i >= 0 {
		b = b[:i]
	}
	return string(b)
}

func attrU32(b []byte) uint32 {
	if len(b) < 4 {
		return 0
	}
	return binary.BigEndian.Uint32(b)
}

// DecodeNFTChain returns the table and chain name of one NFT_MSG_NEWCHAIN
// payload.
func DecodeNFTChain(b []byte) (table, name string, err error) {
	it, err := nftAttrs(b)
	if err != nil {
		return "", "", err
	}
	for it.next() {
		switch it.typ {
		case unix.NFTA_CHAIN_TABLE:
			table = attrString(it.data)
		case unix.NFTA_CHAIN_NAME:
			name = attrString(it.data)
		}
	}
	return table, name, it.err
}

// DecodeNFTSet decodes one NFT_MSG_NEWSET payload.
func DecodeNFTSet(b []byte) (NFTSetInfo, error) {
	var s NFTSetInfo
	it, err := nftAttrs(b)
	if err != nil {
		return s, err
	}
	for it.next() {
		switch it.typ {
		case unix.NFTA_SET_TABLE:
			s.Table = attrString(it.data)
		case unix.NFTA_SET_NAME:
			s.Name = attrString(it.data)
		case unix.NFTA_SET_FLAGS:
			s.Flags = attrU32(it.data)
		case unix.NFTA_SET_KEY_TYPE:
			s.KeyType = attrU32(it.data)
		case unix.NFTA_SET_KEY_LEN:
			s.KeyLen = attrU32(it.data)
		case unix.NFTA_SET_DATA_TYPE:
			s.DataType = attrU32(it.data)
		case unix.NFTA_SET_DATA_LEN:
			s.DataLn = attrU32(it.data)
		}
	}
	return s, it.err
}

// nft's data types (nftables include/datatype.h); a concatenation packs
// its parts' types 6 bits each, the first part highest.
const (
	nftTypeVerdict     = 1
	nftTypeIPAddr      = 7
	nftTypeIP6Addr     = 8
	nftTypeInetProto   = 12
	nftTypeInetService = 13
	nftTypeBits        = 6
	nftDataVerdict     = 0xffffff00
)

// nftConcatTypes splits a (possibly concatenated) type into its parts.
func nftConcatTypes(t uint32) []uint32 {
	var out []uint32
	for t != 0 && len(out) < 6 {
		out = append(out, t&(1<<nftTypeBits-1))
		t >>= nftTypeBits
	}
	for i, j := 0, len(out)-1; i < j; i, j = i+1, j-1 {
		out[i], out[j] = out[j], out[i]
	}
	return out
}

// nftRender renders a value of type t the way nft -j prints it, parts of a
// concatenation each padded to 4 bytes; false when a type is not known.
func nftRender(t uint32, b []byte) ([]string, bool) {
	parts := nftConcatTypes(t)
	if len(parts) == 0 {
		return nil, false
	}
	out := make([]string, 0, len(parts))
	for _, p := range parts {
		var n int
		switch p {
		case nftTypeIPAddr:
			n = 4
		case nftTypeIP6Addr:
			n = 16
		case nftTypeInetProto:
			n = 1
		case nftTypeInetService:
			n = 2
		default:
			return nil, false
		}
		if len(b) < n {
			return nil, false
		}
		v := b[:n]
		switch p {
		case nftTypeIPAddr:
			out = append(out, netip.AddrFrom4([4]byte(v)).String())
		case nftTypeIP6Addr:
			out = append(out, netip.AddrFrom16([16]byte(v)).String())
		case nftTypeInetProto:
			out = append(out, inetProtoName(v[0]))
		case nftTypeInetService:
			out = append(out, strconv.Itoa(int(binary.BigEndian.Uint16(v))))
		}
		pad := (n + 3) &^ 3
		if len(parts) == 1 {
			pad = n
		}
		if pad > len(b) {
			pad = len(b)
		}
		b = b[pad:]
	}
	if len(b) != 0 {
		return nil, false
	}
	return out, true
}

func inetProtoName(p uint8) string {
	switch p {
	case unix.IPPROTO_TCP:
		return "tcp"
	case unix.IPPROTO_UDP:
		return "udp"
	case unix.IPPROTO_SCTP:
		return "sctp"
	case unix.IPPROTO_ICMP:
		return "icmp"
	case unix.IPPROTO_ICMPV6:
		return "ipv6-icmp"
	}
	return strconv.Itoa(int(p))
}

// NFTSetElem is one decoded element: an NFTElement of a named map or set
// (a set's has only Key and Comment), or the data parts of an anonymous
// map's element.
type NFTSetElem struct {
	NFTElement
	Data []string
}

// DecodeNFTSetElems decodes one NFT_MSG_NEWSETELEM payload of set s.
// Elements it cannot render are returned as unknown, not as elements.
func DecodeNFTSetElems(s NFTSetInfo, b []byte) ([]NFTSetElem, []NFTUnknown, error) {
	return decodeNFTSetElemsInto(s, b, nil)
}

// decodeNFTSetElemsInto appends to out: a dump of a 10,000-element set
// grows one slice instead of one per message.
func decodeNFTSetElemsInto(s NFTSetInfo, b []byte, out []NFTSetElem) ([]NFTSetElem, []NFTUnknown, error) {
	it, err := nftAttrs(b)
	if err != nil {
		return out, nil, err
	}
	var unk []NFTUnknown
	for it.next() {
		if it.typ != unix.NFTA_SET_ELEM_LIST_ELEMENTS {
			continue
		}
		list := nested(it.data)
		for list.next() {
			if list.typ != unix.NFTA_LIST_ELEM {
				continue
			}
			e, why := decodeNFTElem(s, list.data)
			if why != "" {
				unk = append(unk, NFTUnknown{Why: why, Raw: nftRaw(list.data)})
				continue
			}
			out = append(out, e)
		}
		if list.err != nil {
			return out, unk, list.err
		}
	}
	return out, unk, it.err
}

func decodeNFTElem(s NFTSetInfo, b []byte) (NFTSetElem, string) {
	var e NFTSetElem
	if s.Flags&unix.NFT_SET_INTERVAL != 0 {
		if !s.isMap() {
			return e, "interval set"
		}
		return e, "interval map"
	}
	var key, data []byte
	var haveKey bool
	it := nested(b)
	for it.next() {
		switch it.typ {
		case unix.NFTA_SET_ELEM_KEY:
			key, haveKey = nftDataValue(it.data), true
		case unix.NFTA_SET_ELEM_DATA:
			data = it.data
		case unix.NFTA_SET_ELEM_USERDATA:
			e.Comment = nftComment(it.data)
		case unix.NFTA_SET_ELEM_FLAGS:
			if attrU32(it.data)&unix.NFT_SET_ELEM_INTERVAL_END != 0 {
				return e, "interval end"
			}
		}
	}
	if it.err != nil {
		return e, "bad attributes: " + it.err.Error()
	}
	if !haveKey {
		return e, "element without a key"
	}
	if !s.anon() { // an anonymous map's keys (numgen's integers) are not used
		k, ok := nftRender(s.KeyType, key)
		if !ok {
			return e, fmt.Sprintf("key type %#x", s.KeyType)
		}
		e.Key = k
	}
	if !s.isMap() { // a plain set's element is its key
		return e, ""
	}
	if s.DataType == nftDataVerdict {
		v, tgt, ok := nftVerdictData(data)
		if !ok {
			return e, "verdict"
		}
		e.Verdict, e.Target = v, tgt
		return e, ""
	}
	d, ok := nftRender(s.DataType, nftDataValue(data))
	if !ok {
		return e, fmt.Sprintf("data type %#x", s.DataType)
	}
	e.Data = d
	if len(d) == 1 {
		e.Verdict = d[0]
	} else {
		e.Verdict = "concat" // what the JSON reader makes of a concatenated value
	}
	return e, ""
}

// nftDataValue returns NFTA_DATA_VALUE of a nested nft_data.
func nftDataValue(b []byte) []byte {
	it := nested(b)
	for it.next() {
		if it.typ == unix.NFTA_DATA_VALUE {
			return it.data
		}
	}
	return nil
}

// nftVerdictData decodes a nested NFTA_DATA_VERDICT as nft -j names it.
func nftVerdictData(b []byte) (string, string, bool) {
	it := nested(b)
	for it.next() {
		if it.typ != unix.NFTA_DATA_VERDICT {
			continue
		}
		v := nested(it.data)
		code, haveCode, chain := int32(0), false, ""
		for v.next() {
			switch v.typ {
			case unix.NFTA_VERDICT_CODE:
				if len(v.data) >= 4 {
					code, haveCode = int32(binary.BigEndian.Uint32(v.data)), true
				}
			case unix.NFTA_VERDICT_CHAIN:
				chain = attrString(v.data)
			}
		}
		name, ok := nftVerdictName(code)
		return name, chain, ok && haveCode
	}
	return "", "", false
}

func nftVerdictName(code int32) (string, bool) {
	switch expr.VerdictKind(code) {
	case expr.VerdictAccept:
		return "accept", true
	case expr.VerdictDrop:
		return "drop", true
	case expr.VerdictContinue:
		return "continue", true
	case expr.VerdictReturn:
		return "return", true
	case expr.VerdictJump:
		return "jump", true
	case expr.VerdictGoto:
		return "goto", true
	}
	return "", false
}

// nftComment reads the comment TLV (type 0) of nft's element userdata.
func nftComment(b []byte) string {
	for len(b) >= 2 {
		typ, l := b[0], int(b[1])
		if 2+l > len(b) {
			return ""
		}
		if typ == 0 {
			return attrString(b[2 : 2+l])
		}
		b = b[2+l:]
	}
	return ""
}

// NFTRule is one decoded rule, reduced to what NFTChain holds.
type NFTRule struct {
	Table string
	Chain string
	DNAT  []string
	Jumps []string
	// Unknown is set when an expression could not be decoded; the rule's
	// DNAT and jumps are then incomplete.
	Unknown *NFTUnknown
}

// nftKnownExprs are the expressions that do not change where a rule sends
// packets (matches, counters, marks, masquerade, reject...).
var nftKnownExprs = map[string]bool{
	"cmp": true, "payload": true, "meta": true, "ct": true, "fib": true, "bitwise": true,
	"counter": true, "masq": true, "reject": true, "range": true, "limit": true, "log": true,
	"numgen": true, "byteorder": true, "exthdr": true, "quota": true, "objref": true,
	"notrack": true, "dynset": true, "connlimit": true, "hash": true, "socket": true, "rt": true,
}

// nftReg is what a rule wrote into one 32-bit register.
type nftReg struct {
	data []byte // immediate bytes from this register on
	set  string // a map lookup wrote its value here
}

// nftReg32 maps an nf_tables register number to its 32-bit slot.
func nftReg32(r uint32) (int, bool) {
	switch {
	case r >= 1 && r <= 4:
		return int(r-1) * 4, true
	case r >= 8 && r < 24:
		return int(r - 8), true
	}
	return 0, false
}

// DecodeNFTRule decodes one NFT_MSG_NEWRULE payload. anon returns the
// data values of an anonymous map a lookup names (numgen DNAT maps).
func DecodeNFTRule(b []byte, anon func(string) [][]string) (NFTRule, error) {
	var r NFTRule
	it, err := nftAttrs(b)
	if err != nil {
		return r, err
	}
	var exprs []byte
	for it.next() {
		switch it.typ {
		case unix.NFTA_RULE_TABLE:
			r.Table = attrString(it.data)
		case unix.NFTA_RULE_CHAIN:
			r.Chain = attrString(it.data)
		case unix.NFTA_RULE_EXPRESSIONS:
			exprs = it.data
		}
	}
	if it.err != nil {
		return r, it.err
	}
	fam := b[0]
	var regs [16]nftReg
	unknown := func(why string, raw []byte) {
		if r.Unknown == nil {
			r.Unknown = &NFTUnknown{Why: why, Raw: nftRaw(raw)}
		}
	}
	list := nested(exprs)
	for list.next() {
		if list.typ != unix.NFTA_LIST_ELEM {
			continue
		}
		name, data := "", []byte(nil)
		e := nested(list.data)
		for e.next() {
			switch e.typ {
			case unix.NFTA_EXPR_NAME:
				name = attrString(e.data)
			case unix.NFTA_EXPR_DATA:
				data = e.data
			}
		}
		if e.err != nil {
			unknown("bad expression: "+e.err.Error(), list.data)
			continue
		}
		switch name {
		case "immediate":
			var im expr.Immediate
			if err := expr.Unmarshal(fam, data, &im); err != nil {
				unknown("immediate: "+err.Error(), list.data)
				continue
			}
			if im.Register == unix.NFT_REG_VERDICT {
				var v expr.Verdict
				if err := expr.Unmarshal(fam, data, &v); err != nil {
					unknown("verdict: "+err.Error(), list.data)
					continue
				}
				if v.Kind == expr.VerdictJump || v.Kind == expr.VerdictGoto {
					r.Jumps = append(r.Jumps, v.Chain)
				}
				continue
			}
			if i, ok := nftReg32(im.Register); ok {
				for k := 0; k*4 < len(im.Data) && i+k < len(regs); k++ {
					regs[i+k] = nftReg{data: im.Data[k*4:]}
				}
			}
		case "lookup":
			var l expr.Lookup
			if err := expr.Unmarshal(fam, data, &l); err != nil {
				unknown("lookup: "+err.Error(), list.data)
				continue
			}
			if i, ok := nftReg32(l.DestRegister); ok && l.IsDestRegSet {
				regs[i] = nftReg{set: l.SetName}
			}
		case "nat":
			var n expr.NAT
			if err := expr.Unmarshal(fam, data, &n); err != nil {
				unknown("nat: "+err.Error(), list.data)
				continue
			}
			if n.Type != expr.NATTypeDestNAT {
				continue
			}
			d, ok := nftNATTargets(n, &regs, anon)
			if !ok {
				unknown("dnat from registers the reader does not follow", list.data)
				continue
			}
			r.DNAT = append(r.DNAT, d...)
		default:
			if !nftKnownExprs[name] {
				unknown("expression "+strconv.Quote(name), list.data)
			}
		}
	}
	if list.err != nil {
		unknown("bad expression list: "+list.err.Error(), exprs)
	}
	return r, nil
}

// nftNATTargets renders a dnat's destinations as nft -j's reader does:
// "ip:port" from immediates, or each "ip . port" value of a numgen map.
func nftNATTargets(n expr.NAT, regs *[16]nftReg, anon func(string) [][]string) ([]string, bool) {
	ai, ok := nftReg32(n.RegAddrMin)
	if !ok {
		return nil, false
	}
	a := regs[ai]
	if a.set != "" {
		vals := anon(a.set)
		if vals == nil {
			return nil, false
		}
		var out []string
		for _, v := range vals {
			if len(v) == 2 {
				out = append(out, hostPort(v[0], v[1]))
			}
		}
		return out, true
	}
	alen := 4
	if n.Family == unix.NFPROTO_IPV6 {
		alen = 16
	}
	if len(a.data) < alen {
		return nil, false
	}
	var addr string
	if alen == 4 {
		addr = netip.AddrFrom4([4]byte(a.data[:4])).String()
	} else {
		addr = netip.AddrFrom16([16]byte(a.data[:16])).String()
	}
	port := ""
	if n.RegProtoMin != 0 {
		pi, ok := nftReg32(n.RegProtoMin)
		if !ok || len(regs[pi].data) < 2 {
			return nil, false
		}
		port = strconv.Itoa(int(binary.BigEndian.Uint16(regs[pi].data)))
	}
	return []string{hostPort(addr, port)}, true
}
