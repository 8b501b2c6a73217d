package kubeproxy

import (
	"github.com/node-doctor/node-doctor/pkg/dataplane"

	"context"
	"fmt"
	"net"
	"slices"
	"strconv"
	"strings"

	corev1 "k8s.io/api/core/v1"
)

// What kube-proxy's IPVS mode programs besides virtual servers: every
// service IP bound to the kube-ipvs0 dummy interface (so the node accepts
// packets for it and IPVS sees them) and ipsets its few iptables rules match
// on. Both are read through optional interfaces of the IPVS lister.

// IPVSNode is everything read in IPVS mode.
type IPVSNode struct {
	Virtual []dataplane.IPVSVirtual
	// Dummy holds kube-ipvs0's addresses; DummyRead says they were read,
	// DummyExists that the interface exists.
	Dummy                 []string
	DummyRead, DummyExist bool
	// IPSets is nil when they were not read.
	IPSets map[string]dataplane.IPSet
	// NodePortAddresses is kube-proxy's --nodeport-addresses (nil: its
	// default, or unknown).
	NodePortAddresses []string
}

// readIPVS reads the virtual servers, and kube-ipvs0 and the ipsets when the
// lister can.
func readIPVS(ctx context.Context, l dataplane.IPVSLister) (map[bool]*Programmed, *IPVSNode, error) {
	st, err := dataplane.ReadIPVS(ctx, l)
	if err != nil {
		return nil, nil, err
	}
	p, n := fromIPVS(st)
	return p, n, nil
}

// fromIPVS is the comparison's view of an IPVS read.
func fromIPVS(st *dataplane.IPVSState) (map[bool]*Programmed, *IPVSNode) {
	n := &IPVSNode{Virtual: st.Virtual, Dummy: st.Dummy, DummyRead: st.DummyRead, DummyExist: st.DummyExist, IPSets: st.IPSets}
	return ProgrammedFromIPVS(st.Virtual), n
}

// ipsetName is kube-proxy's set name for a family: its IPv6 proxier puts
// "6-" after "KUBE-".
func ipsetName(base string, v6 bool) string {
	if v6 {
		return "KUBE-6-" + strings.TrimPrefix(base, "KUBE-")
	}
	return base
}

// staleOwner stands for the Service of something no Service has.
var staleOwner = ServicePortName{Name: "(no Service)"}

// CompareIPVSNode adds to Compare's result (disc, verified) for one family
// what IPVS mode needs besides ClusterIP virtual servers: NodePort virtual
// servers on the node's IPs, the endpoints of NodePort and external
// virtual servers, service IPs bound to kube-ipvs0 (and none stale there),
// and the ipset entries of every service port. node may be nil.
func CompareIPVSNode(desired []DesiredPort, v6 bool, n *IPVSNode, node *corev1.Node, disc []Discrepancy, verified int) ([]Discrepancy, int) {
	if n == nil {
		return disc, verified
	}
	vs := map[string][]string{} // "ip/proto/port" -> destinations with weight
	for _, v := range n.Virtual {
		a := v.Service.Address
		if a == nil || v.Service.FWMark != 0 || (a.To4() == nil) != v6 {
			continue
		}
		var eps []string
		for _, d := range v.Destinations {
			if d.Weight > 0 {
				eps = append(eps, net.JoinHostPort(d.Address.String(), strconv.Itoa(int(d.Port))))
			}
		}
		slices.Sort(eps)
		vs[svcKey(a.String(), dataplane.IPVSProto(v.Service.Protocol), strconv.Itoa(int(v.Service.Port)))] = eps
	}
	serviceIPs := map[string]bool{}
	for i := range desired {
		serviceIPs[desired[i].ClusterIP] = true
		for _, ip := range desired[i].ExternalIPs {
			serviceIPs[ip] = true
		}
	}
	nodeIPs := ipvsNodeIPs(desired, v6, vs, serviceIPs, node, n.NodePortAddresses)
	broken := map[string]bool{}
	for _, dc := range disc {
		broken[dc.Service.String()+"/"+dc.Service.Protocol] = true
	}
	before := len(disc)
	add := func(d *DesiredPort, reason, what, expected, actual, msg string) {
		disc = append(disc, Discrepancy{Service: d.Name, Reason: reason, Expected: expected, Actual: actual, Message: msg,
			Changed: d.Changed, Key: "ipvs|" + d.Name.String() + "/" + d.Name.Protocol + "|" + reason + "|" + what})
	}
	dummy := map[string]bool{}
	for _, a := range n.Dummy {
		dummy[a] = true
	}
	entries := map[string]map[string]bool{}
	for name, set := range n.IPSets {
		m := make(map[string]bool, len(set.Entries))
		for _, e := range set.Entries {
			m[e] = true
		}
		entries[name] = m
	}
	for i := range desired {
		d := &desired[i]
		if !d.HasEndpoints {
			continue // the same on every node; Compare counts it
		}
		proto, port := d.Name.Protocol, strconv.Itoa(int(d.Port))
		ext := d.Cluster
		if d.ExternalLocal {
			ext = d.Local
		}
		// Virtual servers for NodePorts and external IPs, and their real servers.
		var targets []string
		if d.NodePort > 0 {
			for _, ip := range nodeIPs {
				k := svcKey(ip, proto, strconv.Itoa(int(d.NodePort)))
				if _, ok := vs[k]; !ok {
					add(d, "NodePortNotProgrammed", k, fmt.Sprintf("virtual server %s -> %s", k, orNone(ext)), "no virtual server "+k,
						"the NodePort has no IPVS virtual server on this node IP, so connections to it fail")
					continue
				}
				targets = append(targets, k)
			}
		}
		for _, ip := range d.ExternalIPs {
			// A missing one is Compare's ExternalIPNotProgrammed.
			k := svcKey(ip, proto, port)
			if _, ok := vs[k]; ok {
				targets = append(targets, k)
			}
		}
		for _, k := range targets {
			for _, x := range compareEndpoints(d, ipvsChain(k), ext, vs[k]) {
				x.Changed, x.Key = d.Changed, "ipvs|"+k+"|"+x.Key
				disc = append(disc, x)
			}
		}
		// Service IPs bound to kube-ipvs0.
		if n.DummyRead && n.DummyExist {
			for _, ip := range append([]string{d.ClusterIP}, d.ExternalIPs...) {
				if !dummy[ip] {
					add(d, "ServiceIPNotBound", ip, ip+" on "+dataplane.IPVSDummyDevice, dataplane.IPVSDummyDevice+" has no "+ip,
						"the service IP is not bound to "+dataplane.IPVSDummyDevice+", so this node does not take packets for it and IPVS never sees them")
				}
			}
		}
		// ipset entries kube-proxy's iptables rules match on.
		if n.IPSets != nil {
			for _, w := range wantedIPSetEntries(d, v6, nodeIPs) {
				if !ipsetHas(entries, w.sets, w.entry) {
					set := strings.Join(w.sets, " or ")
					actual := set + " has no " + w.entry
					if !slices.ContainsFunc(w.sets, func(s string) bool { _, ok := n.IPSets[s]; return ok }) {
						actual = "no ipset " + set
					}
					add(d, "IPSetEntryMissing", w.sets[0]+"|"+w.entry, set+" has "+w.entry, actual,
						"an entry kube-proxy's iptables rules match on is missing from its ipset, so "+w.why)
				}
			}
		}
	}
	// kube-ipvs0 addresses no Service has.
	if n.DummyRead {
		if !n.DummyExist && len(desired) > 0 {
			disc = append(disc, Discrepancy{Service: staleOwner, Reason: "IPVSDummyMissing", Expected: "interface " + dataplane.IPVSDummyDevice + " with the service IPs",
				Actual: "no interface " + dataplane.IPVSDummyDevice, Key: "ipvs|dummy-missing",
				Message: "kube-proxy's IPVS mode binds every service IP to " + dataplane.IPVSDummyDevice + ", which does not exist, so no service IP is taken by this node"})
		}
		for _, a := range n.Dummy {
			ip := net.ParseIP(a)
			// The kernel adds an fe80:: address when the link is up.
			if ip == nil || (ip.To4() == nil) != v6 || serviceIPs[a] || ip.IsLinkLocalUnicast() {
				continue
			}
			disc = append(disc, Discrepancy{Service: staleOwner, Reason: "StaleServiceIP", Expected: "no " + a + " on " + dataplane.IPVSDummyDevice + " (no Service has it)",
				Actual: a + " on " + dataplane.IPVSDummyDevice, Key: "ipvs|stale-ip|" + a,
				Message: "an address of a Service the API no longer has is still bound, so this node swallows traffic meant for that IP elsewhere"})
		}
	}
	// Virtual servers for no service IP and no NodePort.
	nodePorts := map[string]bool{}
	for i := range desired {
		if desired[i].NodePort > 0 {
			nodePorts[desired[i].Name.Protocol+"/"+strconv.Itoa(int(desired[i].NodePort))] = true
		}
	}
	for k, eps := range vs {
		ip, pp, _ := strings.Cut(k, "/")
		if serviceIPs[ip] || nodePorts[pp] {
			continue
		}
		disc = append(disc, Discrepancy{Service: staleOwner, Reason: "StaleVirtualServer", Expected: "no virtual server " + k,
			Actual: fmt.Sprintf("virtual server %s -> %s", k, orNone(eps)), Key: "ipvs|stale-vs|" + k,
			Message: "an IPVS virtual server for a Service port the API no longer has is still programmed"})
	}
	// A port Compare verified but that has differences here is not verified.
	for _, dc := range disc[before:] {
		key := dc.Service.String() + "/" + dc.Service.Protocol
		if dc.Service != staleOwner && !broken[key] {
			broken[key] = true
			verified--
		}
	}
	slices.SortFunc(disc, func(a, b Discrepancy) int { return strings.Compare(a.Key, b.Key) })
	return disc, max(verified, 0)
}

// ipvsNodeIPs are the node IPs NodePort virtual servers must be on: the
// Node's InternalIP addresses of the family, and every other address that
// carries a NodePort virtual server of some service (kube-proxy uses all
// the node's addresses, or those of --nodeport-addresses). InternalIPs
// outside the CIDRs of --nodeport-addresses are not expected.
func ipvsNodeIPs(desired []DesiredPort, v6 bool, vs map[string][]string, serviceIPs map[string]bool, node *corev1.Node, nodePortAddrs []string) []string {
	set := map[string]bool{}
	if node != nil {
		for _, a := range node.Status.Addresses {
			ip := net.ParseIP(a.Address)
			if a.Type == corev1.NodeInternalIP && ip != nil && (ip.To4() == nil) == v6 && nodePortAddressAllowed(ip, nodePortAddrs) {
				set[ip.String()] = true
			}
		}
	}
	nodePorts := map[string]bool{}
	for i := range desired {
		if desired[i].NodePort > 0 {
			nodePorts[desired[i].Name.Protocol+"/"+strconv.Itoa(int(desired[i].NodePort))] = true
		}
	}
	for k := range vs {
		ip, pp, _ := strings.Cut(k, "/")
		if !serviceIPs[ip] && nodePorts[pp] {
			set[ip] = true
		}
	}
	out := make([]string, 0, len(set))
	for ip := range set {
		out = append(out, ip)
	}
	slices.Sort(out)
	return out
}

// nodePortAddressAllowed says kube-proxy serves NodePorts on ip given its
// --nodeport-addresses: empty (all addresses), "primary" (the node's
// primary IPs, which the InternalIPs are) or CIDRs ("localhost" and
// anything unparsable never exclude it, to stay on the side of no alarm).
func nodePortAddressAllowed(ip net.IP, addrs []string) bool {
	cidrs := 0
	for _, a := range addrs {
		if a == "primary" || a == "all" {
			return true
		}
		_, n, err := net.ParseCIDR(a)
		if err != nil {
			if a != "localhost" {
				return true
			}
			continue
		}
		if (n.IP.To4() == nil) != (ip.To4() == nil) {
			continue
		}
		cidrs++
		if n.Contains(ip) {
			return true
		}
	}
	// CIDRs only for the other family leave this family at its default.
	return cidrs == 0 && !onlyLocalhost(addrs)
}

func onlyLocalhost(addrs []string) bool {
	for _, a := range addrs {
		if a != "localhost" {
			return false
		}
	}
	return len(addrs) > 0
}

type wantedEntry struct {
	sets  []string // any of them
	entry string
	why   string
}

// wantedIPSetEntries are the entries kube-proxy's IPVS proxier adds for one
// service port with endpoints.
func wantedIPSetEntries(d *DesiredPort, v6 bool, nodeIPs []string) []wantedEntry {
	proto, port := d.Name.Protocol, strconv.Itoa(int(d.Port))
	n := func(base string) string { return ipsetName(base, v6) }
	out := []wantedEntry{{[]string{n("KUBE-CLUSTER-IP")}, d.ClusterIP + "," + proto + ":" + port,
		"traffic to the ClusterIP from outside the pod network is not masqueraded"}}
	for _, ip := range d.ExternalIPs {
		// externalIPs and load-balancer IPs are one list here; kube-proxy
		// puts them in KUBE-EXTERNAL-IP(-LOCAL) or KUBE-LOAD-BALANCER.
		out = append(out, wantedEntry{[]string{n("KUBE-EXTERNAL-IP"), n("KUBE-EXTERNAL-IP-LOCAL"), n("KUBE-LOAD-BALANCER")},
			ip + "," + proto + ":" + port, "traffic to the external or load-balancer IP is not accepted or masqueraded"})
	}
	for _, ep := range d.Local {
		host, p, err := net.SplitHostPort(ep)
		if err != nil {
			continue
		}
		out = append(out, wantedEntry{[]string{n("KUBE-LOOP-BACK")}, host + "," + proto + ":" + p + "," + host,
			"a pod on this node that reaches itself through the Service (hairpin) is not masqueraded"})
	}
	if d.NodePort > 0 {
		np := strconv.Itoa(int(d.NodePort))
		why := "the NodePort is not accepted by kube-proxy's iptables rules"
		switch proto {
		case "tcp", "udp":
			u := strings.ToUpper(proto)
			out = append(out, wantedEntry{[]string{n("KUBE-NODE-PORT-" + u)}, np, why})
			if d.ExternalLocal {
				out = append(out, wantedEntry{[]string{n("KUBE-NODE-PORT-LOCAL-" + u)}, np, why + " as Local"})
			}
		case "sctp":
			for _, ip := range nodeIPs {
				out = append(out, wantedEntry{[]string{n("KUBE-NODE-PORT-SCTP-HASH")}, ip + ",sctp:" + np, why})
			}
		}
	}
	return out
}

func ipsetHas(sets map[string]map[string]bool, names []string, entry string) bool {
	for _, s := range names {
		if sets[s][entry] {
			return true
		}
	}
	return false
}
