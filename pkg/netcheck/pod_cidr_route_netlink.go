package netcheck

import (
	"context"
	"errors"
	"fmt"
	"net"
	"net/netip"
	"time"

	"github.com/vishvananda/netlink"
	"github.com/vishvananda/netns"
	"golang.org/x/sys/unix"
)

// NetlinkRoutes reads the main routing table over rtnetlink in one network
// namespace: three dumps (links, addresses, routes) per family.
type NetlinkRoutes struct {
	// NS is the namespace to inspect; netns.None() means the agent's own.
	NS netns.NsHandle
}

var routeTypes = map[int]string{
	unix.RTN_UNICAST: "unicast", unix.RTN_LOCAL: "local", unix.RTN_BROADCAST: "broadcast", unix.RTN_ANYCAST: "anycast",
	unix.RTN_MULTICAST: "multicast", unix.RTN_BLACKHOLE: "blackhole", unix.RTN_UNREACHABLE: "unreachable",
	unix.RTN_PROHIBIT: "prohibit", unix.RTN_THROW: "throw", unix.RTN_NAT: "nat",
}

// RouteTable implements RouteLister.
func (n NetlinkRoutes) RouteTable(ctx context.Context, v6 bool) (RouteTable, error) {
	var t RouteTable
	h, err := netlink.NewHandleAt(n.NS)
	if err != nil {
		return t, fmt.Errorf("netlink: open handle: %w", err)
	}
	defer h.Close()
	if dl, ok := ctx.Deadline(); ok {
		if err := h.SetSocketTimeout(max(time.Until(dl), time.Millisecond)); err != nil {
			return t, fmt.Errorf("netlink: set timeout: %w", err)
		}
	}
	fam := netlink.FAMILY_V4
	if v6 {
		fam = netlink.FAMILY_V6
	}
	links, err := h.LinkList()
	if err != nil && !errors.Is(err, netlink.ErrDumpInterrupted) {
		return t, fmt.Errorf("netlink: list links: %w", err)
	}
	addrs, err := h.AddrList(nil, fam)
	if err != nil && !errors.Is(err, netlink.ErrDumpInterrupted) {
		return t, fmt.Errorf("netlink: list addresses: %w", err)
	}
	names := map[int]string{}
	idx := map[int]int{}
	for _, l := range links {
		a := l.Attrs()
		names[a.Index] = a.Name
		idx[a.Index] = len(t.Links)
		t.Links = append(t.Links, LinkInfo{Name: a.Name, Kind: l.Type(), Up: a.Flags&net.FlagUp != 0, Loopback: a.Flags&net.FlagLoopback != 0})
	}
	for _, a := range addrs {
		i, ok := idx[a.LinkIndex]
		if !ok || a.IPNet == nil {
			continue
		}
		ip, ok := netip.AddrFromSlice(a.IP)
		if !ok {
			continue
		}
		ones, _ := a.Mask.Size()
		t.Links[i].Addrs = append(t.Links[i].Addrs, netip.PrefixFrom(ip.Unmap(), ones))
	}
	// RouteList without a table filter returns the main table only.
	routes, err := h.RouteList(nil, fam)
	if err != nil && !errors.Is(err, netlink.ErrDumpInterrupted) {
		return t, fmt.Errorf("netlink: list routes: %w", err)
	}
	for _, r := range routes {
		rt := Route{Type: routeTypes[r.Type], Dev: names[r.LinkIndex], Proto: r.Protocol.String()}
		if rt.Type == "" {
			rt.Type = fmt.Sprintf("type-%d", r.Type)
		}
		if r.Dst != nil {
			ip, _ := netip.AddrFromSlice(r.Dst.IP)
			ones, _ := r.Dst.Mask.Size()
			rt.Dst = netip.PrefixFrom(ip.Unmap(), ones)
		} else if v6 {
			rt.Dst = netip.MustParsePrefix("::/0")
		} else {
			rt.Dst = netip.MustParsePrefix("0.0.0.0/0")
		}
		if gw, ok := netip.AddrFromSlice(r.Gw); ok {
			rt.Gateway = gw.Unmap()
		}
		if len(r.MultiPath) > 0 && rt.Dev == "" {
			rt.Dev = names[r.MultiPath[0].LinkIndex]
		}
		t.Routes = append(t.Routes, rt)
	}
	return t, nil
}
