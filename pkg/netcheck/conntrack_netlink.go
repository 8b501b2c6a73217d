package netcheck

import (
	"context"
	"encoding/binary"
	"errors"
	"fmt"
	"time"

	"github.com/vishvananda/netlink/nl"
	"github.com/vishvananda/netns"
	"golang.org/x/sys/unix"
)

// ConntrackNetlink reads conntrack statistics from the kernel over
// ctnetlink, for kernels built without /proc/net/stat/nf_conntrack.
type ConntrackNetlink interface {
	// Stats returns the per-CPU counters summed over CPUs, with the global
	// entry count and table size.
	Stats(ctx context.Context) (ConntrackStats, error)
}

// ctnetlink message types and attributes
// (include/uapi/linux/netfilter/nfnetlink_conntrack.h); x/sys/unix and
// vishvananda/netlink do not define the statistics ones.
const (
	ipctnlMsgCtGetStatsCPU = 4
	ipctnlMsgCtGetStats    = 5

	ctaStatsFound         = 2
	ctaStatsInvalid       = 4
	ctaStatsInsert        = 8
	ctaStatsInsertFailed  = 9
	ctaStatsDrop          = 10
	ctaStatsEarlyDrop     = 11
	ctaStatsError         = 12
	ctaStatsSearchRestart = 13
	ctaStatsClashResolve  = 14
	ctaStatsChainTooLong  = 15

	ctaStatsGlobalEntries    = 1
	ctaStatsGlobalMaxEntries = 2
)

// Ctnetlink asks the kernel for conntrack statistics over NETLINK_NETFILTER.
// The kernel answers only with CAP_NET_ADMIN in the namespace's user
// namespace (nfnetlink checks it for every message, reads included).
type Ctnetlink struct {
	// NS is the network namespace; netns.None() means the agent's own.
	NS netns.NsHandle
}

// Stats sends IPCTNL_MSG_CT_GET_STATS_CPU (a dump, one message per CPU) and
// IPCTNL_MSG_CT_GET_STATS (entries and max) and parses the replies.
func (c Ctnetlink) Stats(ctx context.Context) (ConntrackStats, error) {
	cpus, glob, err := c.raw(ctx)
	if err != nil {
		return ConntrackStats{}, err
	}
	return ParseCtnetlinkStats(cpus, glob)
}

// raw returns the reply payloads: one per CPU, and the global one.
func (c Ctnetlink) raw(ctx context.Context) (cpus, glob [][]byte, err error) {
	s, err := nl.GetNetlinkSocketAt(c.NS, netns.None(), unix.NETLINK_NETFILTER)
	if err != nil {
		return nil, nil, fmt.Errorf("ctnetlink: open socket: %w", err)
	}
	defer s.Close()
	d := 5 * time.Second
	if dl, ok := ctx.Deadline(); ok {
		d = max(time.Until(dl), time.Millisecond)
	}
	tv := unix.NsecToTimeval(d.Nanoseconds())
	if err := errors.Join(s.SetReceiveTimeout(&tv), s.SetSendTimeout(&tv)); err != nil {
		return nil, nil, fmt.Errorf("ctnetlink: set timeout: %w", err)
	}
	sh := map[int]*nl.SocketHandle{unix.NETLINK_NETFILTER: {Socket: s}}
	ask := func(msg, flags int) ([][]byte, error) {
		req := nl.NewNetlinkRequest(unix.NFNL_SUBSYS_CTNETLINK<<8|msg, flags)
		req.AddData(&nl.Nfgenmsg{NfgenFamily: unix.AF_UNSPEC, Version: nl.NFNETLINK_V0})
		req.Sockets = sh
		return req.Execute(unix.NETLINK_NETFILTER, 0)
	}
	cpus, err = ask(ipctnlMsgCtGetStatsCPU, unix.NLM_F_DUMP)
	if err != nil {
		return nil, nil, fmt.Errorf("ctnetlink: per-CPU stats: %w", err)
	}
	if err := ctx.Err(); err != nil {
		return nil, nil, err
	}
	// Not a dump: NLM_F_ACK makes the kernel end the answer with an ack.
	glob, err = ask(ipctnlMsgCtGetStats, unix.NLM_F_ACK)
	if err != nil {
		return nil, nil, fmt.Errorf("ctnetlink: global stats: %w", err)
	}
	return cpus, glob, nil
}

// ParseCtnetlinkStats sums the per-CPU replies and adds the global one. Each
// message is the netlink payload: nfgenmsg (res_id = CPU), then attributes
// holding big-endian 32-bit counters.
func ParseCtnetlinkStats(cpus, global [][]byte) (ConntrackStats, error) {
	var st ConntrackStats
	for i, m := range cpus {
		_, attrs, err := parseNfAttrs(m)
		if err != nil {
			return st, fmt.Errorf("ctnetlink: per-CPU message %d: %w", i, err)
		}
		st.CPUs++
		for typ, v := range attrs {
			switch typ {
			case ctaStatsFound:
				st.Found += v
			case ctaStatsInvalid:
				st.Invalid += v
			case ctaStatsInsert:
				st.Insert += v
			case ctaStatsInsertFailed:
				st.InsertFailed += v
			case ctaStatsDrop:
				st.Drop += v
			case ctaStatsEarlyDrop:
				st.EarlyDrop += v
			case ctaStatsError:
				st.Error += v
			case ctaStatsSearchRestart:
				st.SearchRestart += v
			case ctaStatsClashResolve:
				st.ClashResolve += v
			case ctaStatsChainTooLong:
				st.ChainTooLong += v
			}
		}
	}
	if st.CPUs == 0 {
		return st, errors.New("ctnetlink: no per-CPU statistics in the answer")
	}
	if len(global) != 1 {
		return st, fmt.Errorf("ctnetlink: %d global statistics messages, want 1", len(global))
	}
	_, attrs, err := parseNfAttrs(global[0])
	if err != nil {
		return st, fmt.Errorf("ctnetlink: global message: %w", err)
	}
	e, ok := attrs[ctaStatsGlobalEntries]
	if !ok {
		return st, errors.New("ctnetlink: global statistics without an entry count")
	}
	st.Entries, st.Max = e, attrs[ctaStatsGlobalMaxEntries] // max: kernels >= 5.x
	return st, nil
}

// parseNfAttrs reads an nfgenmsg and the flat list of 32-bit attributes
// after it; other attribute sizes are skipped.
func parseNfAttrs(b []byte) (resID uint16, attrs map[uint16]uint64, err error) {
	if len(b) < nl.SizeofNfgenmsg {
		return 0, nil, fmt.Errorf("%d bytes, shorter than nfgenmsg", len(b))
	}
	resID = binary.BigEndian.Uint16(b[2:4])
	attrs = map[uint16]uint64{}
	native := nl.NativeEndian()
	for rest := b[nl.SizeofNfgenmsg:]; len(rest) > 0; {
		if len(rest) < unix.SizeofNlAttr {
			return resID, attrs, fmt.Errorf("%d trailing bytes", len(rest))
		}
		l := int(native.Uint16(rest[0:2]))
		typ := native.Uint16(rest[2:4]) &^ (unix.NLA_F_NESTED | unix.NLA_F_NET_BYTEORDER)
		if l < unix.SizeofNlAttr || l > len(rest) {
			return resID, attrs, fmt.Errorf("attribute %d: length %d out of range (%d left)", typ, l, len(rest))
		}
		if l == unix.SizeofNlAttr+4 {
			attrs[typ] = uint64(binary.BigEndian.Uint32(rest[4:8]))
		}
		next := (l + unix.NLA_ALIGNTO - 1) &^ (unix.NLA_ALIGNTO - 1)
		if next > len(rest) {
			next = len(rest)
		}
		rest = rest[next:]
	}
	return resID, attrs, nil
}
