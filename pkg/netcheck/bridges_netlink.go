package netcheck

import (
	"context"
	"errors"
	"fmt"
	"time"

	"github.com/vishvananda/netlink"
	"github.com/vishvananda/netlink/nl"
	"github.com/vishvananda/netns"
	"golang.org/x/sys/unix"
)

// NetlinkBridges lists bridges over rtnetlink in one network namespace.
type NetlinkBridges struct {
	// NS is the namespace to inspect; netns.None() means the agent's own.
	NS netns.NsHandle
}

// Bridges lists bridges with their ports, hairpin flags and addresses using
// two netlink dumps (links, bridge ports) plus one address query per bridge.
func (n NetlinkBridges) Bridges(ctx context.Context) ([]Bridge, error) {
	h, err := netlink.NewHandleAt(n.NS)
	if err != nil {
		return nil, fmt.Errorf("netlink: open handle: %w", err)
	}
	defer h.Close()
	if dl, ok := ctx.Deadline(); ok {
		if err := h.SetSocketTimeout(max(time.Until(dl), time.Millisecond)); err != nil {
			return nil, fmt.Errorf("netlink: set timeout: %w", err)
		}
	}
	links, err := h.LinkList()
	if err != nil && !errors.Is(err, netlink.ErrDumpInterrupted) {
		return nil, fmt.Errorf("netlink: list links: %w", err)
	}
	hairpin, err := n.hairpinModes(ctx)
	if err != nil {
		return nil, err
	}

	byIndex := map[int]*Bridge{}
	var order []int
	for _, l := range links {
		a := l.Attrs()
		if l.Type() != "bridge" {
			continue
		}
		b := &Bridge{Name: a.Name, Up: a.Flags&unix.IFF_UP != 0, Promisc: a.Promisc != 0}
		addrs, err := h.AddrList(l, netlink.FAMILY_V6)
		if err != nil {
			return nil, fmt.Errorf("netlink: addresses of %s: %w", a.Name, err)
		}
		for _, ad := range addrs {
			if ad.IP.IsGlobalUnicast() {
				b.GlobalIPv6 = true
			}
		}
		byIndex[a.Index] = b
		order = append(order, a.Index)
	}
	for _, l := range links {
		a := l.Attrs()
		if b, ok := byIndex[a.MasterIndex]; ok && a.MasterIndex != 0 {
			b.Ports = append(b.Ports, BridgePort{Name: a.Name, Kind: l.Type(), Hairpin: hairpin[a.Index]})
		}
	}
	out := make([]Bridge, 0, len(order))
	for _, i := range order {
		out = append(out, *byIndex[i])
	}
	return out, nil
}

// hairpinModes dumps every bridge port once (AF_BRIDGE) and returns the
// hairpin flag by interface index; netlink.LinkGetProtinfo would dump all
// ports once per port.
func (n NetlinkBridges) hairpinModes(ctx context.Context) (map[int]bool, error) {
	sock, err := nl.GetNetlinkSocketAt(n.NS, netns.None(), unix.NETLINK_ROUTE)
	if err != nil {
		return nil, fmt.Errorf("netlink: open socket: %w", err)
	}
	defer sock.Close()
	if dl, ok := ctx.Deadline(); ok {
		tv := unix.NsecToTimeval(max(time.Until(dl), time.Millisecond).Nanoseconds())
		if err := sock.SetReceiveTimeout(&tv); err != nil {
			return nil, fmt.Errorf("netlink: set timeout: %w", err)
		}
	}
	req := nl.NewNetlinkRequest(unix.RTM_GETLINK, unix.NLM_F_DUMP)
	req.Sockets = map[int]*nl.SocketHandle{unix.NETLINK_ROUTE: {Socket: sock}}
	req.AddData(nl.NewIfInfomsg(unix.AF_BRIDGE))
	out := map[int]bool{}
	err = req.ExecuteIter(unix.NETLINK_ROUTE, unix.RTM_NEWLINK, func(m []byte) bool {
		msg := nl.DeserializeIfInfomsg(m)
		attrs, perr := nl.ParseRouteAttr(m[msg.Len():])
		if perr != nil {
			return true
		}
		for _, a := range attrs {
			if a.Attr.Type&^unix.NLA_F_NESTED != unix.IFLA_PROTINFO {
				continue
			}
			infos, perr := nl.ParseRouteAttr(a.Value)
			if perr != nil {
				continue
			}
			for _, info := range infos {
				if info.Attr.Type == nl.IFLA_BRPORT_MODE && len(info.Value) > 0 {
					out[int(msg.Index)] = info.Value[0] != 0
				}
			}
		}
		return true
	})
	if err != nil && !errors.Is(err, netlink.ErrDumpInterrupted) {
		return nil, fmt.Errorf("netlink: dump bridge ports: %w", err)
	}
	return out, nil
}
