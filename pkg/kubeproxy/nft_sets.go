package kubeproxy

import (
	"fmt"
	"net"
	"slices"

	corev1 "k8s.io/api/core/v1"
)

// kube-proxy's nftables mode keeps three plain sets the comparison checks
// (v1.37, pkg/proxy/nftables/proxier.go): cluster-ips holds every ClusterIP
// it programs, whatever the endpoints (its services rule masquerades
// traffic to them from outside the pod network, and cluster-ips-check
// rejects their undefined ports instead of dropping them); hairpin-connections
// holds "ip . ip . proto . port" of every local endpoint a port reaches (a
// pod connecting to itself through the Service is masqueraded); and
// nodeport-ips, when --nodeport-addresses does not match every address,
// the node's addresses it matches.

// setWants tracks, per set, the elements the desired ports want: each is
// checked once (ports share a ClusterIP or an endpoint), and what is left
// over is stale.
type setWants struct {
	want         map[string]map[string]bool
	nodePortDone bool
}

func newSetWants(p *Programmed) *setWants {
	if p.Sets == nil {
		return nil
	}
	return &setWants{want: map[string]map[string]bool{}}
}

// hairpinEndpoints are the endpoints of d on this node that get a rule:
// kube-proxy adds each to hairpin-connections.
func hairpinEndpoints(d *DesiredPort) []string {
	reach := d.ReachableEndpoints()
	var out []string
	for _, e := range d.Local {
		if slices.Contains(reach, e) {
			out = append(out, e)
		}
	}
	return out
}

// compareSets adds d's missing set elements to disc. An element missing
// from a set that holds undecoded elements is not a finding
// (RulesNotUnderstood).
func (p *Programmed) compareSets(d *DesiredPort, w *setWants, disc []Discrepancy) []Discrepancy {
	if w == nil {
		return disc
	}
	check := func(set, elem, reason, msg string) {
		have, ok := p.Sets[set]
		if !ok {
			return
		}
		if w.want[set] == nil {
			w.want[set] = map[string]bool{}
		}
		if w.want[set][elem] {
			return // an earlier port of the same IP or endpoint checked it
		}
		w.want[set][elem] = true
		if have[elem] {
			return
		}
		x := Discrepancy{Service: d.Name, Reason: reason, Expected: fmt.Sprintf("element %s in set %s", elem, set),
			Actual: fmt.Sprintf("no element %s in set %s", elem, set), Message: msg, Changed: d.Changed,
			Key: d.Name.String() + "/" + d.Name.Protocol + "|" + reason + "|" + elem}
		if why := p.Unverifiable["set "+set]; why != "" {
			x.Unverifiable = "set " + set + ": " + why
			x.Message = "not compared: node-doctor could not decode part of this set (" + x.Unverifiable + "); " + reason + " would be reported"
			x.Reason = "RulesNotUnderstood"
			x.Key = d.Name.String() + "/" + d.Name.Protocol + "|unverifiable|" + set
		}
		disc = append(disc, x)
	}
	check(nftClusterIPsSet, d.ClusterIP, "ClusterIPNotInSet",
		"the ClusterIP is missing from kube-proxy's cluster-ips set: traffic to it from outside the pod network is not masqueraded, and connections to its undefined ports are dropped instead of rejected")
	if d.HasEndpoints {
		proto := d.Name.Protocol
		for _, ep := range hairpinEndpoints(d) {
			ip, port, err := net.SplitHostPort(ep)
			if err != nil {
				continue
			}
			check(nftHairpinSet, ip+" . "+ip+" . "+proto+" . "+port, "HairpinNotProgrammed",
				"a local endpoint is missing from kube-proxy's hairpin-connections set: a pod reaching itself through the Service is not masqueraded, so those connections fail")
		}
	}
	if d.NodePort > 0 && !w.nodePortDone {
		w.nodePortDone = true // one node IP missing breaks every NodePort: report it once
		for _, ip := range p.NodePortIPs {
			check(nftNodePortIPsSet, ip, "NodeIPNotInSet",
				"a node IP --nodeport-addresses selects is missing from kube-proxy's nodeport-ips set, so NodePorts on it are not matched")
		}
	}
	return disc
}

// staleSetElements reports elements of cluster-ips and hairpin-connections
// no desired port wants (kube-proxy removes them on its next sync).
// nodeport-ips is not judged for extras: kube-proxy adds every interface
// address in the CIDRs, which node-doctor does not all know.
func (p *Programmed) staleSetElements(w *setWants, disc []Discrepancy) []Discrepancy {
	if w == nil {
		return disc
	}
	for _, set := range []string{nftClusterIPsSet, nftHairpinSet} {
		have, ok := p.Sets[set]
		if !ok || p.Unverifiable["set "+set] != "" {
			continue
		}
		msg := "an IP no Service has is still in kube-proxy's cluster-ips set"
		if set == nftHairpinSet {
			msg = "an endpoint no Service on this node has is still in kube-proxy's hairpin-connections set"
		}
		for elem := range have {
			if w.want[set][elem] {
				continue
			}
			disc = append(disc, Discrepancy{Service: staleOwner, Reason: "StaleSetElement", Expected: fmt.Sprintf("no element %s in set %s", elem, set),
				Actual: fmt.Sprintf("element %s in set %s", elem, set), Key: "stale|set " + set + "|" + elem, Message: msg})
		}
	}
	return disc
}

// nodePortSetIPs are the node IPs kube-proxy must put in nodeport-ips, as
// far as node-doctor can know: the Node's InternalIPs of the family inside
// a CIDR of --nodeport-addresses (kube-proxy adds every interface address
// in them, and the kubelet's InternalIPs are on an interface). Nil when the
// flag is unknown, empty or holds "primary" (which means kube-proxy's own
// node IP: its --bind-address, which /configz gives but node-doctor does
// not read, else the Node's first address) or anything but CIDRs.
func nodePortSetIPs(node *corev1.Node, v6 bool, addrs []string, known bool) []string {
	if node == nil || !known || len(addrs) == 0 {
		return nil
	}
	var cidrs []*net.IPNet
	for _, a := range addrs {
		_, n, err := net.ParseCIDR(a)
		if err != nil {
			return nil
		}
		if (n.IP.To4() == nil) == v6 {
			cidrs = append(cidrs, n)
		}
	}
	var out []string
	for _, a := range node.Status.Addresses {
		ip := net.ParseIP(a.Address)
		if a.Type != corev1.NodeInternalIP || ip == nil || (ip.To4() == nil) != v6 || ip.IsLoopback() {
			continue
		}
		for _, n := range cidrs {
			if n.Contains(ip) && !slices.Contains(out, ip.String()) {
				out = append(out, ip.String())
			}
		}
	}
	return out
}
