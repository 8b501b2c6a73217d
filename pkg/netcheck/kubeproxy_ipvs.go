package netcheck

import (
	"context"
	"fmt"
	"net"
	"slices"
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

func ipvsProto(p uint16) string {
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

// ipvsChain is the pseudo chain name of one virtual server, so the IPVS view
// fits the same comparison as the chain-based modes.
func ipvsChain(key string) string { return "ipvs:" + key }

// ProgrammedFromIPVS turns virtual servers into the common view, split by
// family. Destinations with weight 0 are draining (terminating) and do not
// get new connections, so they are left out.
func ProgrammedFromIPVS(vs []IPVSVirtual) map[bool]*Programmed {
	out := map[bool]*Programmed{false: newProgrammed("ipvs"), true: newProgrammed("ipvs")}
	out[false].NodePorts, out[true].NodePorts = nil, nil
	for _, v := range vs {
		if v.Service.Address == nil || v.Service.FWMark != 0 {
			continue
		}
		p := out[v.Service.Address.To4() == nil]
		p.Rules++
		key := svcKey(v.Service.Address.String(), ipvsProto(v.Service.Protocol), strconv.Itoa(int(v.Service.Port)))
		chain := ipvsChain(key)
		p.Services[key] = chain
		eps := []string{}
		for _, d := range v.Destinations {
			if d.Weight > 0 {
				eps = append(eps, net.JoinHostPort(d.Address.String(), strconv.Itoa(int(d.Port))))
			}
		}
		slices.Sort(eps)
		p.Endpoints[chain] = eps
	}
	return out
}
