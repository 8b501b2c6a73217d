package kubeproxy

import (
	"net"
	"slices"
	"strconv"
	"strings"
	"time"

	corev1 "k8s.io/api/core/v1"
	discoveryv1 "k8s.io/api/discovery/v1"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
)

// DesiredPort is what kube-proxy must have programmed on this node for one
// service port in one IP family, computed from the Service and its
// EndpointSlices the way kube-proxy categorises endpoints.
type DesiredPort struct {
	Name        ServicePortName
	IPv6        bool
	ClusterIP   string
	Port        int32
	NodePort    int32
	ExternalIPs []string // spec.externalIPs and LoadBalancer ingress IPs
	// InternalLocal / ExternalLocal: the traffic policies are Local.
	InternalLocal, ExternalLocal bool
	// HasEndpoints: some usable endpoint exists anywhere in the cluster.
	HasEndpoints bool
	// Cluster and Local are the "ip:port" endpoints for the Cluster and
	// Local policies (ready ones; serving-terminating ones when none is ready).
	Cluster, Local []string
	// Topology names the topology filter kube-proxy applies to Cluster
	// ("PreferSameZone zone-a", "PreferSameNode node-1"); empty when none.
	Topology string
	// Changed is the latest change of the Service or its slices (seconds).
	Changed time.Time
}

// ExternallyAccessible says kube-proxy builds an external chain.
func (d *DesiredPort) ExternallyAccessible() bool {
	return d.NodePort > 0 || len(d.ExternalIPs) > 0
}

// InternalEndpoints are the endpoints ClusterIP traffic goes to.
func (d *DesiredPort) InternalEndpoints() []string {
	if d.InternalLocal {
		return d.Local
	}
	return d.Cluster
}

// HasInternalEndpoints says the ClusterIP must DNAT somewhere.
func (d *DesiredPort) HasInternalEndpoints() bool {
	return d.HasEndpoints && (!d.InternalLocal || len(d.Local) > 0)
}

func (d *DesiredPort) usesCluster() bool {
	return !d.InternalLocal || (d.ExternallyAccessible() && !d.ExternalLocal)
}

func (d *DesiredPort) usesLocal() bool {
	return d.InternalLocal || (d.ExternallyAccessible() && d.ExternalLocal)
}

// ReachableEndpoints are every endpoint that gets a rule on this node.
func (d *DesiredPort) ReachableEndpoints() []string {
	var out []string
	if d.usesCluster() {
		out = append(out, d.Cluster...)
	}
	if d.usesLocal() {
		for _, e := range d.Local {
			if !slices.Contains(out, e) {
				out = append(out, e)
			}
		}
	}
	return out
}

// serviceProxyNameLabel marks Services another proxy implements.
const serviceProxyNameLabel = "service.kubernetes.io/service-proxy-name"

// NodeTopology is what kube-proxy knows of its own node when it filters
// endpoints by topology hints.
type NodeTopology struct {
	Name string
	// Zone is the node's topology.kubernetes.io/zone label.
	Zone string
}

// NodeTopologyOf reads the zone label off a node object (nil: name only).
func NodeTopologyOf(name string, n *corev1.Node) NodeTopology {
	t := NodeTopology{Name: name}
	if n != nil {
		t.Zone = n.Labels[corev1.LabelTopologyZone]
	}
	return t
}

// DesiredServicePorts computes the desired state of every service port kube-proxy
// handles, for both families, on a node without a zone.
func DesiredServicePorts(svcs []*corev1.Service, eps []*discoveryv1.EndpointSlice, node string) []DesiredPort {
	return DesiredServicePortsOn(svcs, eps, NodeTopology{Name: node})
}

// DesiredServicePortsOn is DesiredServicePorts for a node with a zone.
func DesiredServicePortsOn(svcs []*corev1.Service, eps []*discoveryv1.EndpointSlice, node NodeTopology) []DesiredPort {
	bySvc := map[string][]*discoveryv1.EndpointSlice{}
	for _, s := range eps {
		name := s.Labels[discoveryv1.LabelServiceName]
		if name == "" {
			continue
		}
		k := s.Namespace + "/" + name
		bySvc[k] = append(bySvc[k], s)
	}
	var out []DesiredPort
	for _, svc := range svcs {
		if svc.Spec.Type == corev1.ServiceTypeExternalName || svc.Labels[serviceProxyNameLabel] != "" {
			continue
		}
		if _, headless := svc.Labels[corev1.IsHeadlessService]; headless {
			continue
		}
		ips := svc.Spec.ClusterIPs
		if len(ips) == 0 && svc.Spec.ClusterIP != "" {
			ips = []string{svc.Spec.ClusterIP}
		}
		slicesOf := bySvc[svc.Namespace+"/"+svc.Name]
		changed := lastChange(&svc.ObjectMeta)
		for _, s := range slicesOf {
			if c := lastChange(&s.ObjectMeta); c.After(changed) {
				changed = c
			}
		}
		for _, cip := range ips {
			ip := net.ParseIP(cip)
			if ip == nil { // "None": headless
				continue
			}
			v6 := ip.To4() == nil
			for _, p := range svc.Spec.Ports {
				d := DesiredPort{
					Name:          ServicePortName{Namespace: svc.Namespace, Name: svc.Name, Port: p.Name, Protocol: strings.ToLower(string(p.Protocol))},
					IPv6:          v6,
					ClusterIP:     ip.String(),
					Port:          p.Port,
					InternalLocal: svc.Spec.InternalTrafficPolicy != nil && *svc.Spec.InternalTrafficPolicy == corev1.ServiceInternalTrafficPolicyLocal,
					Changed:       changed,
				}
				if d.Name.Protocol == "" {
					d.Name.Protocol = "tcp"
				}
				if svc.Spec.Type == corev1.ServiceTypeNodePort || svc.Spec.Type == corev1.ServiceTypeLoadBalancer {
					d.NodePort = p.NodePort
				}
				for _, e := range svc.Spec.ExternalIPs {
					if x := net.ParseIP(e); x != nil && (x.To4() == nil) == v6 {
						d.ExternalIPs = append(d.ExternalIPs, x.String())
					}
				}
				if svc.Spec.Type == corev1.ServiceTypeLoadBalancer {
					for _, ing := range svc.Status.LoadBalancer.Ingress {
						if ing.IPMode != nil && *ing.IPMode == corev1.LoadBalancerIPModeProxy {
							continue
						}
						if x := net.ParseIP(ing.IP); x != nil && (x.To4() == nil) == v6 {
							d.ExternalIPs = append(d.ExternalIPs, x.String())
						}
					}
				}
				d.ExternalLocal = d.ExternallyAccessible() && svc.Spec.ExternalTrafficPolicy == corev1.ServiceExternalTrafficPolicyLocal
				categorize(&d, p, slicesOf, node)
				out = append(out, d)
			}
		}
	}
	return out
}

// endpointInfo is one endpoint of a service port as kube-proxy sees it.
type endpointInfo struct {
	hostPort                           string
	local, ready, serving, terminating bool
	zones, nodes                       []string // topology hints
}

// categorize fills the endpoint sets the way kube-proxy's
// CategorizeEndpoints does (pkg/proxy/topology.go, v1.37): Cluster is the
// ready endpoints, narrowed by topology hints, else every serving-terminating
// one; Local is the local ready ones, else the local serving-terminating ones.
func categorize(d *DesiredPort, sp corev1.ServicePort, slicesOf []*discoveryv1.EndpointSlice, node NodeTopology) {
	eps := endpointsOf(d, sp, slicesOf, node.Name)
	mode, filterValue := topologyMode(eps, node)
	var ready, term, readyLocal, termLocal []string
	for _, e := range eps {
		switch {
		case e.ready:
			if availableForTopology(e, mode, node) {
				ready = append(ready, e.hostPort)
			}
			if e.local {
				readyLocal = append(readyLocal, e.hostPort)
			}
			d.HasEndpoints = true
		case e.serving && e.terminating:
			term = append(term, e.hostPort)
			if e.local {
				termLocal = append(termLocal, e.hostPort)
			}
			d.HasEndpoints = true
		}
	}
	d.Cluster = ready
	if len(d.Cluster) == 0 {
		// No topology here: hints only ever narrow ready endpoints.
		d.Cluster = term
	}
	d.Local = readyLocal
	if len(d.Local) == 0 {
		d.Local = termLocal
	}
	if mode != "" && d.usesCluster() {
		d.Topology = mode + " " + filterValue
	}
	slices.Sort(d.Cluster)
	slices.Sort(d.Local)
}

// endpointsOf lists the endpoints of one port and family, once each; like
// kube-proxy, only an endpoint's first address counts.
func endpointsOf(d *DesiredPort, sp corev1.ServicePort, slicesOf []*discoveryv1.EndpointSlice, node string) []endpointInfo {
	want := discoveryv1.AddressTypeIPv4
	if d.IPv6 {
		want = discoveryv1.AddressTypeIPv6
	}
	var out []endpointInfo
	seen := map[string]bool{}
	for _, s := range slicesOf {
		if s.AddressType != want {
			continue
		}
		port := int32(-1)
		for _, ep := range s.Ports {
			proto := corev1.ProtocolTCP
			if ep.Protocol != nil {
				proto = *ep.Protocol
			}
			if ep.Name != nil && *ep.Name == sp.Name && ep.Port != nil && strings.EqualFold(string(proto), d.Name.Protocol) {
				port = *ep.Port
			}
		}
		if port < 0 {
			continue
		}
		for _, e := range s.Endpoints {
			if len(e.Addresses) == 0 {
				continue
			}
			ip := net.ParseIP(e.Addresses[0])
			if ip == nil {
				continue
			}
			hp := net.JoinHostPort(ip.String(), strconv.Itoa(int(port)))
			if seen[hp] {
				continue
			}
			seen[hp] = true
			info := endpointInfo{hostPort: hp,
				local:       e.NodeName != nil && *e.NodeName == node,
				ready:       e.Conditions.Ready == nil || *e.Conditions.Ready,
				serving:     e.Conditions.Serving == nil || *e.Conditions.Serving,
				terminating: e.Conditions.Terminating != nil && *e.Conditions.Terminating,
			}
			if e.Hints != nil {
				for _, z := range e.Hints.ForZones {
					info.zones = append(info.zones, z.Name)
				}
				for _, n := range e.Hints.ForNodes {
					info.nodes = append(info.nodes, n.Name)
				}
			}
			out = append(out, info)
		}
	}
	return out
}

// topologyMode is the filter kube-proxy applies and the node name or zone it
// filters on. Hints decide, not the Service's trafficDistribution or
// topology-mode annotation: those tell the EndpointSlice controller to write
// hints, and kube-proxy follows whatever hints the slices carry. Node hints
// win when every ready endpoint has one and one names this node; else zone
// hints when every ready endpoint has one and one names this zone; else none.
func topologyMode(eps []endpointInfo, node NodeTopology) (mode, value string) {
	anyReady := false
	allNode, forNode := true, false
	allZone, forZone := true, false
	for _, e := range eps {
		if !e.ready {
			continue
		}
		anyReady = true
		if len(e.nodes) == 0 {
			allNode = false
		} else if slices.Contains(e.nodes, node.Name) {
			forNode = true
		}
		if len(e.zones) == 0 {
			allZone = false
		} else if slices.Contains(e.zones, node.Zone) {
			forZone = true
		}
	}
	switch {
	case !anyReady:
		return "", ""
	case allNode && forNode:
		return string(corev1.ServiceTrafficDistributionPreferSameNode), node.Name
	case allZone && forZone:
		return string(corev1.ServiceTrafficDistributionPreferSameZone), node.Zone
	}
	return "", ""
}

func availableForTopology(e endpointInfo, mode string, node NodeTopology) bool {
	switch mode {
	case "":
		return true
	case string(corev1.ServiceTrafficDistributionPreferSameNode):
		return slices.Contains(e.nodes, node.Name)
	case string(corev1.ServiceTrafficDistributionPreferSameZone):
		return slices.Contains(e.zones, node.Zone)
	}
	return false
}

// lastChange is the latest managedFields time, else the creation time.
func lastChange(m *metav1.ObjectMeta) time.Time {
	t := m.CreationTimestamp.Time
	for _, f := range m.ManagedFields {
		if f.Time != nil && f.Time.After(t) {
			t = f.Time.Time
		}
	}
	return t
}
