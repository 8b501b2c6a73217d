package dataplane

import (
	"strings"

	"github.com/vishvananda/netlink"

	"errors"

	"github.com/vishvananda/netns"

	"context"
	"fmt"
	"net"
	"strconv"
	"syscall"

	"github.com/moby/ipvs"
)

// IPVSLister lists the kernel's IPVS virtual servers with their real
// servers, as kube-proxy's IPVS mode programs them.
type IPVSLister interface {
	Services(ctx context.Context) ([]IPVSVirtual, error)
}

// IPVSVirtual is one virtual server and its destinations.
type IPVSVirtual struct {
	Service      ipvs.Service
	Destinations []ipvs.Destination
}

// MobyIPVS reads IPVS over generic netlink.
type MobyIPVS struct {
	// NetNS is a network namespace path; empty means the current one.
	NetNS string
}

// Services lists every virtual server and its real servers.
func (m MobyIPVS) Services(ctx context.Context) ([]IPVSVirtual, error) {
	h, err := ipvs.New(m.NetNS)
	if err != nil {
		return nil, fmt.Errorf("ipvs: open: %w", err)
	}
	defer h.Close()
	svcs, err := h.GetServices()
	if err != nil {
		return nil, fmt.Errorf("ipvs: list services: %w", err)
	}
	out := make([]IPVSVirtual, 0, len(svcs))
	for _, s := range svcs {
		if err := ctx.Err(); err != nil {
			return nil, err
		}
		dst, err := h.GetDestinations(s)
		if err != nil {
			return nil, fmt.Errorf("ipvs: list destinations of %s:%d: %w", s.Address, s.Port, err)
		}
		v := IPVSVirtual{Service: *s}
		for _, d := range dst {
			v.Destinations = append(v.Destinations, *d)
		}
		out = append(out, v)
	}
	return out, nil
}

// IPVSProto names an IP protocol number as kube-proxy's keys do.
func IPVSProto(p uint16) string {
	switch p {
	case syscall.IPPROTO_TCP:
		return "tcp"
	case syscall.IPPROTO_UDP:
		return "udp"
	case 132:
		return "sctp"
	}
	return strconv.Itoa(int(p))
}

// IPVSDummyDevice is the dummy interface kube-proxy binds service IPs to.
const IPVSDummyDevice = "kube-ipvs0"

// IPVSDummyLister lists the addresses on kube-ipvs0; ok is false when the
// interface does not exist.
type IPVSDummyLister interface {
	DummyAddrs(ctx context.Context) (addrs []string, ok bool, err error)
}

// IPSetLister lists the kernel's ipsets whose names start with KUBE-.
type IPSetLister interface {
	IPSets(ctx context.Context) (map[string]IPSet, error)
}

// IPSet is one ipset with its entries written the way ipset(8) and
// kube-proxy write them ("10.96.0.10,udp:53", "30080",
// "10.244.0.2,tcp:8080,10.244.0.2").
type IPSet struct {
	Type    string
	Entries []string
}

func (m MobyIPVS) netlinkHandle() (*netlink.Handle, error) {
	if m.NetNS == "" {
		return netlink.NewHandle()
	}
	ns, err := netns.GetFromPath(m.NetNS)
	if err != nil {
		return nil, err
	}
	defer ns.Close()
	return netlink.NewHandleAt(ns)
}

// DummyAddrs lists kube-ipvs0's addresses over rtnetlink.
func (m MobyIPVS) DummyAddrs(ctx context.Context) ([]string, bool, error) {
	h, err := m.netlinkHandle()
	if err != nil {
		return nil, false, fmt.Errorf("netlink: open handle: %w", err)
	}
	defer h.Close()
	l, err := h.LinkByName(IPVSDummyDevice)
	if err != nil {
		var nf netlink.LinkNotFoundError
		if errors.As(err, &nf) {
			return nil, false, nil
		}
		return nil, false, fmt.Errorf("netlink: find %s: %w", IPVSDummyDevice, err)
	}
	addrs, err := h.AddrList(l, netlink.FAMILY_ALL)
	if err != nil {
		return nil, true, fmt.Errorf("netlink: addresses of %s: %w", IPVSDummyDevice, err)
	}
	out := make([]string, 0, len(addrs))
	for _, a := range addrs {
		out = append(out, a.IP.String())
	}
	return out, true, ctx.Err()
}

// IPSets lists kube-proxy's ipsets over the ipset netlink protocol (one
// dump; the ip_set module must be there, as kube-proxy's IPVS mode needs it).
func (m MobyIPVS) IPSets(ctx context.Context) (map[string]IPSet, error) {
	h, err := m.netlinkHandle()
	if err != nil {
		return nil, fmt.Errorf("netlink: open handle: %w", err)
	}
	defer h.Close()
	res, err := h.IpsetListAll()
	if err != nil {
		return nil, fmt.Errorf("ipset: list: %w", err)
	}
	return IPSetsFromNetlink(res), ctx.Err()
}

// IPSetsFromNetlink keeps the KUBE- sets and writes their entries as
// strings. A large set comes in several messages with the same name.
func IPSetsFromNetlink(res []netlink.IPSetResult) map[string]IPSet {
	out := map[string]IPSet{}
	for _, r := range res {
		if !strings.HasPrefix(r.SetName, "KUBE-") {
			continue
		}
		s := out[r.SetName]
		if s.Type == "" {
			s.Type = r.TypeName
		}
		for _, e := range r.Entries {
			s.Entries = append(s.Entries, IPSetEntryString(e))
		}
		out[r.SetName] = s
	}
	return out
}

// IPSetEntryString writes an entry as ipset(8) lists it: ip[/cidr],
// proto:port, then a second ip or net; a bitmap:port entry is its port.
func IPSetEntryString(e netlink.IPSetEntry) string {
	var parts []string
	if e.IP != nil {
		p := e.IP.String()
		if e.CIDR != 0 && e.CIDR != uint8(8*len(ipBytes(e.IP))) {
			p += "/" + strconv.Itoa(int(e.CIDR))
		}
		parts = append(parts, p)
	}
	if e.Port != nil {
		if e.Protocol != nil {
			parts = append(parts, IPVSProto(uint16(*e.Protocol))+":"+strconv.Itoa(int(*e.Port)))
		} else {
			parts = append(parts, strconv.Itoa(int(*e.Port)))
		}
	}
	if e.IP2 != nil {
		p := e.IP2.String()
		if e.CIDR2 != 0 && e.CIDR2 != uint8(8*len(ipBytes(e.IP2))) {
			p += "/" + strconv.Itoa(int(e.CIDR2))
		}
		parts = append(parts, p)
	}
	return strings.Join(parts, ",")
}

func ipBytes(ip net.IP) net.IP {
	if v4 := ip.To4(); v4 != nil {
		return v4
	}
	return ip
}

// IPVSState is what kube-proxy's IPVS mode programs, as read.
type IPVSState struct {
	Virtual []IPVSVirtual
	// Dummy holds kube-ipvs0's addresses; DummyRead says they were read,
	// DummyExist that the interface exists.
	Dummy                 []string
	DummyRead, DummyExist bool
	// IPSets is nil when they were not read.
	IPSets map[string]IPSet
}

// ReadIPVS reads the virtual servers, and kube-ipvs0 and the ipsets when
// the lister can.
func ReadIPVS(ctx context.Context, l IPVSLister) (*IPVSState, error) {
	vs, err := l.Services(ctx)
	if err != nil {
		return nil, err
	}
	n := &IPVSState{Virtual: vs}
	if dl, ok := l.(IPVSDummyLister); ok {
		if n.Dummy, n.DummyExist, err = dl.DummyAddrs(ctx); err != nil {
			return nil, err
		}
		n.DummyRead = true
	}
	if sl, ok := l.(IPSetLister); ok {
		if n.IPSets, err = sl.IPSets(ctx); err != nil {
			return nil, err
		}
	}
	return n, nil
}
