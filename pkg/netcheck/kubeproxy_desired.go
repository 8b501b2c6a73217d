package netcheck

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
	// Topology: hints or trafficDistribution narrow the endpoints per zone,
	// which is not modelled, so the endpoint sets are not compared.
	Topology bool
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

// DesiredServicePorts computes the desired state of every service port kube-proxy
// handles, for both families.
func DesiredServicePorts(svcs []*corev1.Service, eps []*discoveryv1.EndpointSlice, node string) []DesiredPort {
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
				d.Topology = svc.Spec.TrafficDistribution != nil || svc.Annotations[corev1.AnnotationTopologyMode] != ""
				categorize(&d, p, slicesOf, node)
				out = append(out, d)
			}
		}
	}
	return out
}

// categorize fills the endpoint sets: ready endpoints, falling back to
// serving-terminating ones when none is ready (per set, like kube-proxy).
func categorize(d *DesiredPort, sp corev1.ServicePort, slicesOf []*discoveryv1.EndpointSlice, node string) {
	want := discoveryv1.AddressTypeIPv4
	if d.IPv6 {
		want = discoveryv1.AddressTypeIPv6
	}
	var ready, term, readyLocal, termLocal []string
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
			isReady := e.Conditions.Ready == nil || *e.Conditions.Ready
			serving := e.Conditions.Serving == nil || *e.Conditions.Serving
			terminating := e.Conditions.Terminating != nil && *e.Conditions.Terminating
			local := e.NodeName != nil && *e.NodeName == node
			for _, a := range e.Addresses {
				hp := net.JoinHostPort(a, strconv.Itoa(int(port)))
				if seen[hp] {
					continue
				}
				seen[hp] = true
				switch {
				case isReady:
					ready = append(ready, hp)
					if local {
						readyLocal = append(readyLocal, hp)
					}
				case serving && terminating:
					term = append(term, hp)
					if local {
						termLocal = append(termLocal, hp)
					}
				}
			}
		}
	}
	d.Cluster = ready
	if len(d.Cluster) == 0 {
		d.Cluster = term
	}
	d.Local = readyLocal
	if len(d.Local) == 0 {
		d.Local = termLocal
	}
	d.HasEndpoints = len(ready) > 0 || len(term) > 0
	slices.Sort(d.Cluster)
	slices.Sort(d.Local)
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
