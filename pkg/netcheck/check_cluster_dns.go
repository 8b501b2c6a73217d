package netcheck

import (
	"github.com/node-doctor/node-doctor/pkg/kubeproxy"

	"context"
	"errors"
	"fmt"
	"io/fs"
	"net"
	"net/netip"
	"strings"
	"time"

	corev1 "k8s.io/api/core/v1"
	discoveryv1 "k8s.io/api/discovery/v1"

	"github.com/node-doctor/node-doctor/pkg/check"
)

// KubeletDNSConfig is the DNS the kubelet hands to pods; the From fields
// name the setting each value came from.
type KubeletDNSConfig struct {
	ClusterDNS     []string
	ClusterDNSFrom string
	ClusterDomain  string
	ResolvConf     string
	ResolvConfFrom string
}

// KubeletDNS reads the running kubelet's DNS settings; found is false when
// no kubelet runs.
type KubeletDNS interface {
	KubeletDNS(ctx context.Context) (c KubeletDNSConfig, found bool, err error)
}

// LocalAddrs lists the addresses on this node's interfaces.
type LocalAddrs interface {
	LocalAddrs(ctx context.Context) ([]netip.Addr, error)
}

// HostAddrs reads the interface addresses of the agent's network namespace
// (the host's: the agent runs with hostNetwork).
type HostAddrs struct{}

// LocalAddrs implements LocalAddrs.
func (HostAddrs) LocalAddrs(context.Context) ([]netip.Addr, error) {
	as, err := net.InterfaceAddrs()
	if err != nil {
		return nil, fmt.Errorf("interface addresses: %w", err)
	}
	var out []netip.Addr
	for _, a := range as {
		if p, err := netip.ParsePrefix(a.String()); err == nil {
			out = append(out, p.Addr().Unmap())
		}
	}
	return out, nil
}

// ClusterDNSDeps are what the cluster-dns check reads.
type ClusterDNSDeps struct {
	Kubelet  KubeletDNS
	Services kubeproxy.ServiceLister
	// FS is the node's root: proc/net/{udp,tcp}[6] and the resolvConf file.
	FS    fs.FS
	Addrs LocalAddrs
	// Rules, when set, verifies this node's kube-proxy rules for a DNS
	// Service with ready endpoints (as explain service walks them).
	Rules *kubeproxy.KubeProxyDeps
}

// ClusterDNS checks the DNS this node's pods get from the kubelet: every
// clusterDNS address is a Service with ready endpoints or a node-local
// cache listening on this node, and the kubelet's resolvConf does not
// point at a loopback stub.
func ClusterDNS(d ClusterDNSDeps) check.Definition {
	return check.Definition{
		Name:        "cluster-dns",
		Area:        "network",
		Description: "the kubelet's clusterDNS is a Service with ready endpoints or a node-local cache listening here, and its resolvConf has no loopback nameserver",
		Interval:    time.Minute,
		Timeout:     15 * time.Second,
		Conditions:  []string{check.ConditionClusterDNS},
		Check: check.Func(func(ctx context.Context) ([]check.Finding, error) {
			if d.Kubelet == nil {
				return nil, check.NotApplicable("no kubelet reader")
			}
			c, found, err := d.Kubelet.KubeletDNS(ctx)
			if errors.Is(err, fs.ErrNotExist) {
				// The agent's host root lacks the kubelet's config file (a
				// DaemonSet that does not mount it): what pods get is unknown.
				return nil, check.NotApplicable("%v: the kubelet's config file is not visible under the host root (mount it read-only to check its DNS settings)", err)
			}
			if err != nil {
				return nil, err
			}
			if !found {
				return nil, check.NotApplicable("no kubelet runs on this node")
			}
			return clusterDNSFindings(ctx, d, c)
		}),
	}
}

func dnsFinding(sev check.Severity, reason, msg string, det map[string]string) check.Finding {
	return check.Finding{Severity: sev, Condition: check.ConditionClusterDNS, Reason: reason, Message: msg, Details: det}
}

// listeners reads the node's UDP and TCP listening sockets.
func listeners(fsys fs.FS) ([]netip.AddrPort, error) {
	var out []netip.AddrPort
	for _, n := range []string{"udp", "udp6", "tcp", "tcp6"} {
		b, err := fs.ReadFile(fsys, "proc/net/"+n)
		if err != nil {
			if errors.Is(err, fs.ErrNotExist) {
				continue // no IPv6
			}
			return nil, fmt.Errorf("read /proc/net/%s: %w", n, err)
		}
		aps, err := ParseProcNetSockets(b, strings.HasPrefix(n, "udp"))
		if err != nil {
			return nil, err
		}
		out = append(out, aps...)
	}
	return out, nil
}

func listensOn(ls []netip.AddrPort, a netip.Addr) bool {
	for _, l := range ls {
		if l.Port() == 53 && (l.Addr() == a || (l.Addr().IsUnspecified() && l.Addr().Is4() == a.Is4())) {
			return true
		}
	}
	return false
}

func clusterDNSFindings(ctx context.Context, d ClusterDNSDeps, c KubeletDNSConfig) ([]check.Finding, error) {
	var out []check.Finding
	var ok []string
	var local []netip.Addr
	var ls []netip.AddrPort
	if len(c.ClusterDNS) > 0 {
		if d.Addrs != nil {
			var err error
			if local, err = d.Addrs.LocalAddrs(ctx); err != nil {
				return nil, err
			}
		}
		if d.FS != nil {
			var err error
			if ls, err = listeners(d.FS); err != nil {
				return nil, err
			}
		}
	}
	var svcs []*corev1.Service
	var slices []*discoveryv1.EndpointSlice
	var apiErr error = errors.New("no cluster access")
	if d.Services != nil && len(c.ClusterDNS) > 0 {
		if svcs, apiErr = d.Services.Services(); apiErr == nil {
			slices, apiErr = d.Services.EndpointSlices()
		}
	}
	for _, s := range c.ClusterDNS {
		a, err := netip.ParseAddr(s)
		if err != nil {
			continue // the kubelet reader rejects these
		}
		det := map[string]string{"address": s, "setting": c.ClusterDNSFrom}
		isLocal := false
		for _, l := range local {
			isLocal = isLocal || l == a
		}
		if isLocal && listensOn(ls, a) {
			ok = append(ok, s+" (a DNS cache listening on this node)")
			continue
		}
		notListening := func() {
			out = append(out, dnsFinding(check.SeverityProblem, "ClusterDNSNotListening", fmt.Sprintf(
				"clusterDNS address %s (%s) is on this node but nothing listens on port 53 there: every ClusterFirst pod on this node fails name lookups; start the node-local DNS cache (kubectl -n kube-system get ds node-local-dns) or fix the setting", s, c.ClusterDNSFrom), det))
		}
		if apiErr != nil {
			if isLocal {
				notListening()
			}
			continue // the Service side cannot be judged without the API
		}
		svc := serviceWithIP(svcs, s)
		if svc == nil && isLocal {
			notListening()
			continue
		}
		if svc == nil {
			out = append(out, dnsFinding(check.SeverityProblem, "ClusterDNSNoService", fmt.Sprintf(
				"clusterDNS address %s (%s): no Service has that ClusterIP: every ClusterFirst pod on this node fails name lookups; set it to the ClusterIP of the cluster DNS Service (kubectl -n kube-system get svc kube-dns) and restart the kubelet", s, c.ClusterDNSFrom), det))
			continue
		}
		det["service"] = svc.Namespace + "/" + svc.Name
		n := readyEndpoints(slices, svc)
		if n == 0 {
			f := dnsFinding(check.SeverityProblem, "ClusterDNSNoEndpoints", fmt.Sprintf(
				"clusterDNS address %s (%s) is Service %s/%s, which has no ready endpoint: every ClusterFirst pod on this node fails name lookups; see kubectl -n %s get pods,endpointslices for the DNS server's pods", s, c.ClusterDNSFrom, svc.Namespace, svc.Name, svc.Namespace), det)
			f.Object = check.Object{Kind: check.KindService, Namespace: svc.Namespace, Name: svc.Name, UID: string(svc.UID)}
			out = append(out, f)
			continue
		}
		rules := ""
		if d.Rules != nil {
			f, note := dnsServiceRules(ctx, *d.Rules, svc, slices, s, c.ClusterDNSFrom)
			if f != nil {
				out = append(out, *f)
				continue
			}
			rules = ", " + note
		}
		ok = append(ok, fmt.Sprintf("%s (Service %s/%s, %d ready endpoints%s)", s, svc.Namespace, svc.Name, n, rules))
	}
	if c.ResolvConf != "" && d.FS != nil {
		b, err := fs.ReadFile(d.FS, strings.TrimPrefix(c.ResolvConf, "/"))
		det := map[string]string{"resolv_conf": c.ResolvConf, "setting": c.ResolvConfFrom}
		switch {
		case errors.Is(err, fs.ErrNotExist):
			out = append(out, dnsFinding(check.SeverityProblem, "ResolvConfMissing", fmt.Sprintf(
				"the kubelet's resolvConf %s (%s) does not exist: the kubelet cannot give pods the node's DNS; point resolvConf at the node's resolv.conf", c.ResolvConf, c.ResolvConfFrom), det))
		case err != nil:
			return nil, fmt.Errorf("read resolvConf %s: %w", c.ResolvConf, err)
		default:
			for _, ns := range ParseResolvConf(b) {
				if ns.IsLoopback() {
					det["nameserver"] = ns.String()
					out = append(out, dnsFinding(check.SeverityProblem, "ResolvConfLoopback", fmt.Sprintf(
						"the kubelet's resolvConf %s (%s) names the loopback nameserver %s (systemd-resolved's stub): pods with dnsPolicy Default and the cluster DNS server's upstream get an address that is their own loopback, a forwarding loop; "+
							"set resolvConf: /run/systemd/resolve/resolv.conf in the kubelet config (or --resolv-conf) and restart the kubelet", c.ResolvConf, c.ResolvConfFrom, ns), det))
					break
				}
			}
		}
	}
	if len(out) > 0 {
		return out, nil
	}
	if len(c.ClusterDNS) == 0 {
		// The kubelet then hands every pod its resolvConf, checked above.
		return nil, check.NotApplicable("the kubelet sets no clusterDNS: pods get the nameservers of its resolvConf %q", c.ResolvConf)
	}
	msg := "pods on this node get cluster DNS at " + strings.Join(ok, ", ")
	if len(ok) == 0 {
		msg = "the kubelet's clusterDNS is " + strings.Join(c.ClusterDNS, ",")
	}
	if len(c.ClusterDNS) > 0 && apiErr != nil && len(ok) < len(c.ClusterDNS) {
		msg += "; the Service side of clusterDNS " + strings.Join(c.ClusterDNS, ",") + " was not checked (" + apiErr.Error() + ")"
	}
	if c.ResolvConf != "" {
		msg += "; resolvConf " + c.ResolvConf + " has no loopback nameserver"
	}
	return []check.Finding{dnsFinding(check.SeverityOK, "ClusterDNSServed", msg, map[string]string{"cluster_dns": strings.Join(c.ClusterDNS, ","), "cluster_domain": c.ClusterDomain})}, nil
}

func serviceWithIP(svcs []*corev1.Service, ip string) *corev1.Service {
	for _, s := range svcs {
		if s.Spec.ClusterIP == ip {
			return s
		}
		for _, c := range s.Spec.ClusterIPs {
			if c == ip {
				return s
			}
		}
	}
	return nil
}

// readyEndpoints counts the ready addresses of a Service's EndpointSlices.
func readyEndpoints(slices []*discoveryv1.EndpointSlice, svc *corev1.Service) int {
	n := 0
	for _, es := range slices {
		if es.Namespace != svc.Namespace || es.Labels[discoveryv1.LabelServiceName] != svc.Name {
			continue
		}
		for _, e := range es.Endpoints {
			if e.Conditions.Ready == nil || *e.Conditions.Ready {
				n += len(e.Addresses)
			}
		}
	}
	return n
}

// dnsServiceRules verifies this node's kube-proxy rules for the DNS Service:
// a broken port is a finding once kube-proxy has written every change it
// queued and the Service has not changed for kube-proxy's settle time
// (else kube-proxy-rules judges it later); note says what was verified.
func dnsServiceRules(ctx context.Context, d kubeproxy.KubeProxyDeps, svc *corev1.Service, all []*discoveryv1.EndpointSlice, addr, from string) (*check.Finding, string) {
	var mine []*discoveryv1.EndpointSlice
	for _, es := range all {
		if es.Namespace == svc.Namespace && es.Labels[discoveryv1.LabelServiceName] == svc.Name {
			mine = append(mine, es)
		}
	}
	var node *corev1.Node
	name := ""
	if d.Services != nil {
		node, _ = d.Services.Node()
		name = d.Services.NodeName()
	}
	s := kubeproxy.DefaultKubeProxySettings()
	kp := d.API(s)
	// The round's shared snapshot, as kube-proxy-rules reads it.
	obs, err := kubeproxy.ReadProgrammed(ctx, d, s, kp)
	if err != nil {
		return nil, "its rules on this node not verified: " + err.Error()
	}
	p := kubeproxy.VerifyService(obs, svc, mine, node, name)
	if len(p.Ports) == 0 {
		return nil, "its rules on this node not verified: kube-proxy programs none of its ports (another service proxy implements it)"
	}
	if !p.Broken() {
		return nil, "its " + p.Mode + " rules on this node verified"
	}
	sync, err := kp.Sync(ctx)
	now := d.Now()
	if !obs.ReadAt.IsZero() && obs.ReadAt.Before(now) {
		now = obs.ReadAt
	}
	for _, pp := range p.Ports {
		if len(pp.Problems) == 0 {
			continue
		}
		if err != nil || !settled(kubeproxy.Discrepancy{IPv6: pp.Family == "IPv6", Changed: pp.Changed}, now, s.Settle, &sync) {
			return nil, "its rules on this node not verified yet (kube-proxy is still writing)"
		}
		pr := pp.Problems[0]
		f := dnsFinding(check.SeverityProblem, "ClusterDNSRulesBroken", fmt.Sprintf(
			"clusterDNS address %s (%s) is Service %s, which has ready endpoints, but this node's %s rules for port %s (%s %s) are broken: %s (%s): every ClusterFirst pod on this node fails name lookups; %s; node-doctor explain service %s shows the path",
			addr, from, p.Service, p.Mode, pp.Port, pp.Family, pp.Protocol, pr.Reason, pr.Message, pr.Fix, p.Service),
			map[string]string{"address": addr, "setting": from, "service": p.Service, "service_port": pp.Port, "mode": p.Mode, "reason": pr.Reason, "expected": pr.Expected, "actual": pr.Actual})
		f.Object = check.Object{Kind: check.KindService, Namespace: svc.Namespace, Name: svc.Name, UID: string(svc.UID)}
		return &f, ""
	}
	return nil, ""
}
