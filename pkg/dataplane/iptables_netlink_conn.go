package dataplane

import (
	"context"
	"encoding/binary"
	"errors"
	"fmt"
	"time"

	"github.com/mdlayher/netlink"
	"github.com/vishvananda/netns"
	"golang.org/x/sys/unix"
)

// errDumpInterrupted is a dump the kernel marked inconsistent because the
// ruleset changed while it was read.
var errDumpInterrupted = errors.New("nf_tables: ruleset changed during the read")

// nftReadBuf holds any one datagram of a dump: the kernel sizes them to
// the reader's buffer, up to about 32 KiB. A larger one is reported, not
// cut (MSG_TRUNC).
const nftReadBuf = 64 << 10

// dialNFTables opens an nf_tables netlink socket in ns (netns.None(): the
// agent's own namespace).
func dialNFTables(ns netns.NsHandle) (*netlink.Conn, error) {
	cfg := &netlink.Config{}
	if ns > 0 {
		cfg.NetNS = int(ns)
	}
	c, err := netlink.Dial(unix.NETLINK_NETFILTER, cfg)
	if err != nil {
		return nil, fmt.Errorf("nf_tables: netlink: %w", err)
	}
	return c, nil
}

// nftDump sends one NFT_MSG_GET* dump request and hands each answer's body
// (after the nfgenmsg header) to fn as it arrives, one socket read at a
// time, so a large table is never held whole.
// buf is the read buffer (nil: one of nftReadBuf).
func nftDump(ctx context.Context, c *netlink.Conn, buf []byte, msg uint16, family byte, attrs []netlink.Attribute, fn func(body []byte) error) error {
	data, err := netlink.MarshalAttributes(attrs)
	if err != nil {
		return fmt.Errorf("nf_tables: %w", err)
	}
	req := netlink.Message{
		Header: netlink.Header{Type: netlink.HeaderType(unix.NFNL_SUBSYS_NFTABLES<<8 | msg), Flags: netlink.Request | netlink.Dump},
		Data:   append([]byte{family, unix.NFNETLINK_V0, 0, 0}, data...),
	}
	sent, err := c.Send(req)
	if err != nil {
		return fmt.Errorf("nf_tables: send: %w", err)
	}
	if dl, ok := ctx.Deadline(); ok {
		_ = c.SetReadDeadline(dl)
	} else {
		_ = c.SetReadDeadline(time.Time{})
	}
	stop := context.AfterFunc(ctx, func() { _ = c.SetReadDeadline(time.Unix(1, 0)) })
	defer stop()
	rc, err := c.SyscallConn()
	if err != nil {
		return fmt.Errorf("nf_tables: %w", err)
	}
	if buf == nil {
		buf = make([]byte, nftReadBuf)
	}
	interrupted := false
	for {
		var n int
		var rerr error
		err := rc.Read(func(fd uintptr) bool {
			n, _, rerr = unix.Recvfrom(int(fd), buf, unix.MSG_TRUNC)
			return rerr != unix.EAGAIN && rerr != unix.EWOULDBLOCK
		})
		if err == nil {
			err = rerr
		}
		if err != nil {
			if ctx.Err() != nil {
				return fmt.Errorf("nf_tables: read: %w", ctx.Err())
			}
			return fmt.Errorf("nf_tables: read: %w", err)
		}
		if n > len(buf) {
			return fmt.Errorf("nf_tables: read: a datagram of %d bytes does not fit the %d-byte buffer", n, len(buf))
		}
		done, intr, err := walkNetlink(buf[:n], sent.Header.Sequence, fn)
		interrupted = interrupted || intr
		if err != nil {
			return err
		}
		if done {
			if interrupted {
				return errDumpInterrupted
			}
			return nil
		}
	}
}

// walkNetlink splits one datagram into messages: done at NLMSG_DONE, an
// error for NLMSG_ERROR, fn for the rest.
func walkNetlink(b []byte, seq uint32, fn func(body []byte) error) (done, interrupted bool, err error) {
	for len(b) >= unix.NLMSG_HDRLEN {
		l := int(binary.NativeEndian.Uint32(b[0:4]))
		typ := binary.NativeEndian.Uint16(b[4:6])
		flags := binary.NativeEndian.Uint16(b[6:8])
		mseq := binary.NativeEndian.Uint32(b[8:12])
		if l < unix.NLMSG_HDRLEN || l > len(b) {
			return false, interrupted, fmt.Errorf("nf_tables: truncated netlink message")
		}
		body := b[unix.NLMSG_HDRLEN:l]
		next := (l + unix.NLMSG_ALIGNTO - 1) &^ (unix.NLMSG_ALIGNTO - 1)
		if next > len(b) {
			next = len(b)
		}
		b = b[next:]
		if mseq != seq {
			continue
		}
		if flags&unix.NLM_F_DUMP_INTR != 0 {
			interrupted = true
		}
		switch typ {
		case unix.NLMSG_DONE:
			return true, interrupted, nil
		case unix.NLMSG_ERROR:
			if len(body) < 4 {
				return false, interrupted, fmt.Errorf("nf_tables: short error message")
			}
			if code := int32(binary.NativeEndian.Uint32(body)); code != 0 {
				return false, interrupted, fmt.Errorf("nf_tables: %w", unix.Errno(-code))
			}
			return true, interrupted, nil
		case unix.NLMSG_NOOP:
			continue
		}
		if len(body) < 4 {
			continue
		}
		if err := fn(body[4:]); err != nil {
			return false, interrupted, err
		}
	}
	return false, interrupted, nil
}

// nftGeneration is the ruleset's generation id, which every committed
// change increments: equal before and after a read means nothing changed
// in between (how iptables-nft-save knows its many dumps agree).
func nftGeneration(ctx context.Context, c *netlink.Conn) (uint32, error) {
	if dl, ok := ctx.Deadline(); ok {
		_ = c.SetReadDeadline(dl)
	}
	msgs, err := c.Execute(netlink.Message{
		Header: netlink.Header{Type: netlink.HeaderType(unix.NFNL_SUBSYS_NFTABLES<<8 | unix.NFT_MSG_GETGEN), Flags: netlink.Request},
		Data:   []byte{unix.AF_UNSPEC, unix.NFNETLINK_V0, 0, 0},
	})
	if err != nil {
		return 0, fmt.Errorf("nf_tables: generation: %w", err)
	}
	for _, m := range msgs {
		if len(m.Data) < 4 {
			continue
		}
		a := nlAttrs{b: m.Data[4:]}
		for t, v, ok := a.next(); ok; t, v, ok = a.next() {
			if g, ok := be32(v); ok && t == unix.NFTA_GEN_ID {
				return g, nil
			}
		}
	}
	return 0, fmt.Errorf("nf_tables: generation: no id in the answer")
}

// NFTGeneration reads the nf_tables ruleset generation of a network
// namespace (NS -1 or 0: the agent's own) over netlink: one small request.
type NFTGeneration struct {
	NS netns.NsHandle
}

// Generation implements Generationer.
func (g NFTGeneration) Generation(ctx context.Context) (uint32, error) {
	c, err := dialNFTables(g.NS)
	if err != nil {
		return 0, err
	}
	defer c.Close()
	return nftGeneration(ctx, c)
}
