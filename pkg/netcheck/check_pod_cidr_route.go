package netcheck

import (
	"context"
	"fmt"
	"net/netip"
	"strings"
	"time"

	corev1 "k8s.io/api/core/v1"

	"github.com/node-doctor/node-doctor/pkg/check"
)

// NodeGetter gives this node's object from the API (nil when not known).
type NodeGetter interface {
	Node() (*corev1.Node, error)
	NodeName() string
}

// RouteLister reads the main routing table, links and addresses of one IP
// family on this node.
type RouteLister interface {
	RouteTable(ctx context.Context, v6 bool) (RouteTable, error)
}

// RouteTable is what the pod CIDR route check reads of the node's routing.
type RouteTable struct {
	Routes []Route    `json:"routes"`
	Links  []LinkInfo `json:"links"`
}

// Route is one route of the main table.
type Route struct {
	Dst netip.Prefix `json:"dst"`
	// Type: unicast, blackhole, unreachable, prohibit, local, broadcast, ...
	Type    string     `json:"type"`
	Dev     string     `json:"dev,omitempty"`
	Gateway netip.Addr `json:"gateway,omitzero"`
	Proto   string     `json:"proto,omitempty"`
}

// LinkInfo is one network device with its addresses of the family.
type LinkInfo struct {
	Name     string         `json:"name"`
	Kind     string         `json:"kind,omitempty"`
	Up       bool           `json:"up"`
	Loopback bool           `json:"loopback,omitempty"`
	Addrs    []netip.Prefix `json:"addrs,omitempty"`
}

// PodCIDRRoute checks that this node's own pod CIDRs (spec.podCIDRs) are
// routed to the pod network device, not to the uplink, loopback or a
// device that is down.
func PodCIDRRoute(n NodeGetter, r RouteLister) check.Definition {
	return check.Definition{
		Name:        "pod-cidr-route",
		Area:        "network",
		Description: "this node's pod CIDR (spec.podCIDRs) is routed to the pod network, not to the uplink, loopback or a down device",
		Interval:    time.Minute,
		Timeout:     10 * time.Second,
		Conditions:  []string{check.ConditionNetworkConfig},
		Check: check.Func(func(ctx context.Context) ([]check.Finding, error) {
			return podCIDRRouteRun(ctx, n, r)
		}),
	}
}

func podCIDRRouteRun(ctx context.Context, n NodeGetter, r RouteLister) ([]check.Finding, error) {
	if n == nil || r == nil {
		return nil, check.NotApplicable("no cluster access: this node's pod CIDR comes from its Node object")
	}
	node, err := n.Node()
	if err != nil {
		return nil, check.NotApplicable("no cluster access (%v): this node's pod CIDR comes from its Node object", err)
	}
	if node == nil {
		return nil, check.NotApplicable("node %q is not registered in the API (yet)", n.NodeName())
	}
	cidrs := node.Spec.PodCIDRs
	if len(cidrs) == 0 && node.Spec.PodCIDR != "" {
		cidrs = []string{node.Spec.PodCIDR}
	}
	if len(cidrs) == 0 {
		return nil, check.NotApplicable("node %s has no spec.podCIDR: Kubernetes does not allocate pod ranges per node here "+
			"(the CNI's own IPAM assigns pod addresses, e.g. Calico IPAM pools, Cilium cluster-pool, cloud VPC CNIs), so there is no per-node pod route to check", node.Name)
	}
	tables := map[bool]*RouteTable{}
	var out []check.Finding
	for _, c := range cidrs {
		p, err := netip.ParsePrefix(c)
		if err != nil {
			return nil, fmt.Errorf("node %s: spec.podCIDRs %q: %w", node.Name, c, err)
		}
		p = p.Masked()
		v6 := p.Addr().Is6()
		if tables[v6] == nil {
			t, err := r.RouteTable(ctx, v6)
			if err != nil {
				return nil, fmt.Errorf("routes: %w", err)
			}
			tables[v6] = &t
		}
		out = append(out, EvaluatePodCIDRRoute(p, *tables[v6]))
	}
	return out, nil
}

// EvaluatePodCIDRRoute judges how the node routes its own pod CIDR. It
// follows the kernel's longest-prefix match in the main table and accepts
// what real CNIs do:
//   - a route for the CIDR on the pod device (bridge/host-local and flannel:
//     cni0, proto kernel; Cilium: via cilium_host);
//   - a blackhole/unreachable route for the CIDR (Calico) or no CIDR route at
//     all, with the pods reached by their own more specific routes (Calico's
//     cali*, ptp and cloud CNIs);
//   - nothing at all while no pod uses the range: the bridge plugin adds its
//     gateway address and route only with the first pod, and a CNI with its
//     own IPAM never uses spec.podCIDR.
//
// It reports a route that sends the range to the uplink (a device holding a
// default route), to loopback or to a device that is down, and a missing
// route while a device holds the range's gateway address.
func EvaluatePodCIDRRoute(cidr netip.Prefix, t RouteTable) check.Finding {
	links := map[string]*LinkInfo{}
	for i := range t.Links {
		links[t.Links[i].Name] = &t.Links[i]
	}
	uplinks := map[string]bool{}
	for _, r := range t.Routes {
		if r.Dst.Bits() == 0 && r.Type == "unicast" && r.Dev != "" {
			uplinks[r.Dev] = true
		}
	}
	// badDevice says why traffic must not go to a device ("" when fine).
	badDevice := func(dev string) string {
		l := links[dev]
		switch {
		case dev == "":
			return ""
		case l == nil:
			return "device " + dev + " does not exist"
		case !l.Up:
			return "device " + dev + " is down"
		case l.Loopback:
			return dev + " is the loopback device"
		case uplinks[dev]:
			return dev + " carries the default route (the uplink)"
		}
		return ""
	}
	var best *Route
	var inner []Route
	for i, r := range t.Routes {
		switch r.Type {
		case "local", "broadcast", "anycast", "multicast", "throw", "nat":
			continue
		}
		if !r.Dst.IsValid() || r.Dst.Addr().Is4() != cidr.Addr().Is4() {
			continue
		}
		switch {
		case r.Dst.Bits() <= cidr.Bits() && r.Dst.Contains(cidr.Addr()):
			if best == nil || r.Dst.Bits() > best.Dst.Bits() {
				best = &t.Routes[i]
			}
		case r.Dst.Bits() > cidr.Bits() && cidr.Contains(r.Dst.Addr()) && r.Type == "unicast":
			inner = append(inner, r)
		}
	}
	// The device holding the range's gateway address (cni0 10.244.0.1/24).
	var gwDev string
	var gwAddr netip.Prefix
	for _, l := range t.Links {
		for _, a := range l.Addrs {
			if a.Bits() <= cidr.Bits() && cidr.Contains(a.Addr()) {
				gwDev, gwAddr = l.Name, a
			}
		}
	}
	details := map[string]string{"pod_cidr": cidr.String()}
	ok := func(reason, msg string) check.Finding {
		f := finding(check.SeverityOK, reason, msg)
		f.Details = details
		return f
	}
	problem := func(reason, msg string) check.Finding {
		f := finding(check.SeverityProblem, reason, msg)
		f.Details = details
		return f
	}
	fixDev := "the pod network device"
	if gwDev != "" {
		fixDev = gwDev
	}
	if best != nil {
		details["route"] = best.String()
	}
	// Pods reached by their own routes: each must use a usable device.
	checkInner := func() *check.Finding {
		for _, r := range inner {
			if why := badDevice(r.Dev); why != "" {
				details["pod_route"] = r.String()
				f := problem("PodRouteWrongDevice", fmt.Sprintf("the route to pod %s goes to %s: %s; fix: check the CNI plugin's log and restart its agent on this node so it rewrites the pod's route",
					r.Dst, r.Dev, why))
				return &f
			}
		}
		return nil
	}
	switch {
	case best != nil && best.Dst == cidr && best.Type != "unicast":
		if f := checkInner(); f != nil {
			return *f
		}
		return ok("PodCIDRRouteOK", fmt.Sprintf("pod CIDR %s is a %s route and its %d pods are reached by their own routes (as Calico programs it)", cidr, best.Type, len(inner)))
	case best != nil && best.Dst == cidr:
		if why := badDevice(best.Dev); why != "" {
			reason := "PodCIDRRouteWrongDevice"
			if l := links[best.Dev]; l != nil && !l.Up {
				reason = "PodCIDRRouteDeviceDown"
			}
			return problem(reason, fmt.Sprintf("this node's pod CIDR %s is routed to %s (%s), so traffic to this node's pods never reaches them; fix: ip route replace %s dev %s (or restart the CNI plugin's agent so it rewrites the route)",
				cidr, best.Dev, why, cidr, fixDev))
		}
		if f := checkInner(); f != nil {
			return *f
		}
		return ok("PodCIDRRouteOK", fmt.Sprintf("this node's pod CIDR %s is routed to %s", cidr, best.Dev))
	case len(inner) > 0:
		if f := checkInner(); f != nil {
			return *f
		}
		return ok("PodCIDRRouteOK", fmt.Sprintf("this node's pods in %s are reached by their own routes (%d, e.g. %s), no route for the whole range is needed", cidr, len(inner), inner[0]))
	case gwDev != "" && best != nil && best.Dev == gwDev && badDevice(gwDev) == "":
		return ok("PodCIDRRouteOK", fmt.Sprintf("this node's pod CIDR %s is inside %s on %s", cidr, best.Dst, gwDev))
	case gwDev != "":
		details["gateway"] = gwDev + " " + gwAddr.String()
		to := "nowhere (no route matches)"
		if best != nil {
			to = best.String()
			if why := badDevice(best.Dev); why != "" {
				to += ": " + why
			}
		}
		return problem("PodCIDRRouteMissing", fmt.Sprintf("%s holds the pod gateway address %s but there is no route for this node's pod CIDR %s; traffic to this node's pods goes via %s; fix: ip route replace %s dev %s (or restart the CNI plugin's agent so it rewrites the route)",
			gwDev, gwAddr, cidr, to, cidr, gwDev))
	}
	return ok("PodCIDRUnused", fmt.Sprintf("no pod on this node uses its pod CIDR %s yet (no route, gateway address or pod route inside it), or the CNI assigns pod addresses from its own pools: nothing to route", cidr))
}

// String renders a route like `ip route`.
func (r Route) String() string {
	var b strings.Builder
	if r.Type != "" && r.Type != "unicast" {
		b.WriteString(r.Type + " ")
	}
	if r.Dst.Bits() == 0 {
		b.WriteString("default")
	} else {
		b.WriteString(r.Dst.String())
	}
	if r.Gateway.IsValid() {
		b.WriteString(" via " + r.Gateway.String())
	}
	if r.Dev != "" {
		b.WriteString(" dev " + r.Dev)
	}
	if r.Proto != "" {
		b.WriteString(" proto " + r.Proto)
	}
	return b.String()
}
