package netcheck

import (
	"github.com/node-doctor/node-doctor/pkg/dataplane"

	"github.com/node-doctor/node-doctor/pkg/kubeproxy"

	"context"
	"fmt"
	"net/netip"
	"strings"
	"time"

	"github.com/node-doctor/node-doctor/pkg/check"
)

// ForwardSettings name the pod and service ranges when no source on the
// node gives them.
type ForwardSettings struct {
	PodCIDRs     []string `yaml:"podCIDRs"`
	ServiceCIDRs []string `yaml:"serviceCIDRs"`
	// RangeSources picks the pod range sources (node, kube-proxy, cni,
	// pods); empty: all.
	RangeSources []string `yaml:"rangeSources"`
}

// Validate parses the ranges.
func (s *ForwardSettings) Validate() error {
	for _, c := range append(append([]string{}, s.PodCIDRs...), s.ServiceCIDRs...) {
		if _, err := netip.ParsePrefix(c); err != nil {
			return fmt.Errorf("CIDR %q: %w", c, err)
		}
	}
	for _, n := range s.RangeSources {
		if rangeSourceNames[n] == "" {
			return fmt.Errorf("rangeSources: %q is not one of node, kube-proxy, cni, pods", n)
		}
	}
	return nil
}

// ForwardPolicy checks the filter table's FORWARD path: a DROP policy needs
// a rule accepting pod traffic, and no rule outside Kubernetes' own chains
// may drop or reject traffic from or to the pod or service ranges. The pod
// ranges come from the podCIDRs setting, else from ranges (Node, kube-proxy,
// CNI config, pod IPs).
func ForwardPolicy(d kubeproxy.KubeProxyDeps, ranges PodRanges) check.Definition {
	s := &ForwardSettings{}
	return check.Definition{
		Name:        "forward-policy",
		Area:        "network",
		Description: "the FORWARD chain lets pod traffic through and no rule drops the pod or service ranges",
		Interval:    time.Minute,
		Timeout:     20 * time.Second,
		Conditions:  []string{check.ConditionNetworkConfig},
		Settings:    s,
		Check: check.Func(func(ctx context.Context) ([]check.Finding, error) {
			var pods []PodRange
			for _, p := range parsePrefixes(s.PodCIDRs) {
				pods = append(pods, PodRange{Prefix: p, Source: RangeFromSetting})
			}
			if len(pods) == 0 && ranges != nil {
				all, err := ranges.PodRanges(ctx)
				if err != nil {
					return nil, err
				}
				pods = SelectPodRanges(all, s.RangeSources)
			}
			if len(pods) == 0 {
				return nil, check.NotApplicable("the pod ranges of this node are not known (no spec.podCIDRs on the Node, no clusterCIDR from kube-proxy, no host-local ranges in the CNI config, no pod IPs from the runtime, and no podCIDRs setting)")
			}
			snap := d.Snapshot()
			if !snap.HasIPTables() {
				return nil, check.NotApplicable("no iptables-save available")
			}
			svcs := parsePrefixes(s.ServiceCIDRs)
			if len(svcs) == 0 && d.Services != nil {
				svcs = clusterIPPrefixes(d.Services)
			}
			be := dataplane.BackendNFT
			r, err := snap.IPTables(ctx, be, false)
			if err != nil {
				return nil, err
			}
			if r.FilterErr != nil {
				return nil, r.FilterErr
			}
			filter := r.Filter
			// kube-proxy's backend if it is legacy.
			if filter.Chain("KUBE-FORWARD") == nil {
				if lr, err := snap.IPTables(ctx, dataplane.BackendLegacy, false); err == nil && lr.FilterErr == nil && lr.Filter.Chain("KUBE-FORWARD") != nil {
					filter, be = lr.Filter, dataplane.BackendLegacy
				}
			}
			return forwardFindings(filter, be, pods, svcs), nil
		}),
	}
}

// clusterIPPrefixes are the Services' ClusterIPs, when no service range is
// configured.
func clusterIPPrefixes(l kubeproxy.ServiceLister) []netip.Prefix {
	svcs, err := l.Services()
	if err != nil {
		return nil
	}
	var out []netip.Prefix
	for _, s := range svcs {
		for _, ip := range s.Spec.ClusterIPs {
			if a, err := netip.ParseAddr(ip); err == nil {
				out = append(out, netip.PrefixFrom(a, a.BitLen()))
			}
		}
	}
	return out
}

func parsePrefixes(l []string) []netip.Prefix {
	var out []netip.Prefix
	for _, c := range l {
		if p, err := netip.ParsePrefix(c); err == nil {
			out = append(out, p.Masked())
		}
	}
	return out
}

// addrPrefix parses an iptables address ("10.0.0.0/8", "1.2.3.4"); ok is
// false for none or a negated one.
func addrPrefix(addr string) (netip.Prefix, bool) {
	if addr == "" || strings.HasPrefix(addr, "!") {
		return netip.Prefix{}, false
	}
	p, err := netip.ParsePrefix(addr)
	if err != nil {
		a, err := netip.ParseAddr(addr)
		if err != nil {
			return netip.Prefix{}, false
		}
		p = netip.PrefixFrom(a, a.BitLen())
	}
	return p, true
}

// overlaps says an iptables address overlaps one of ps.
func overlaps(addr string, ps []netip.Prefix) bool {
	p, ok := addrPrefix(addr)
	if !ok {
		return false
	}
	for _, q := range ps {
		if q.Overlaps(p) {
			return true
		}
	}
	return false
}

// podRangeOf is the first pod range an iptables address overlaps.
func podRangeOf(addr string, rs []PodRange) (PodRange, bool) {
	p, ok := addrPrefix(addr)
	if !ok {
		return PodRange{}, false
	}
	for _, r := range rs {
		if r.Prefix.Overlaps(p) {
			return r, true
		}
	}
	return PodRange{}, false
}

// matchesAll says a rule has no match but comments: it applies to every
// packet that reaches it.
func matchesAll(r dataplane.IPTRule) bool {
	f, err := dataplane.SplitIPTArgs(r.Line, nil)
	if err != nil {
		return false
	}
	if len(f) >= 2 && f[0] == "-A" {
		f = f[2:]
	}
	for i := 0; i < len(f); i++ {
		switch f[i] {
		case "-j", "-g":
			return true
		case "-m":
			if i+1 < len(f) && f[i+1] == "comment" {
				i++
				continue
			}
			return false
		case "--comment":
			i++
		default:
			return false
		}
	}
	return true
}

func rangesString(rs []PodRange, max int) string {
	var b []string
	for i, r := range rs {
		if i == max {
			b = append(b, fmt.Sprintf("and %d more", len(rs)-max))
			break
		}
		b = append(b, r.String())
	}
	return strings.Join(b, ", ")
}

// forwardFindings walks FORWARD and the chains it jumps to, in order.
func forwardFindings(filter *dataplane.IPTTable, backend string, pods []PodRange, svcs []netip.Prefix) []check.Finding {
	fwd := filter.Chain("FORWARD")
	if fwd == nil {
		f := finding(check.SeverityOK, "ForwardAccepts", "no FORWARD chain in the filter table ("+backend+")")
		f.Condition = check.ConditionNetworkConfig
		return []check.Finding{f}
	}
	var out []check.Finding
	accepted := false
	blocked := false // an unconditional DROP/REJECT already ends the path
	seen := map[string]bool{}
	dropped := func(c *dataplane.IPTChain, r dataplane.IPTRule, what string, det map[string]string) {
		f := finding(check.SeverityProblem, "PodTrafficDropped", fmt.Sprintf(
			"filter chain %s %ss %s (%s): pods on this node lose that traffic; remove the rule unless it is meant to be there",
			c.Name, strings.ToLower(r.Target), what, r.Line))
		f.Condition = check.ConditionNetworkConfig
		f.Details = map[string]string{"chain": c.Name, "rule": r.Line, "backend": backend}
		for k, v := range det {
			f.Details[k] = v
		}
		out = append(out, f)
	}
	var walk func(c *dataplane.IPTChain, depth int, conditional bool)
	walk = func(c *dataplane.IPTChain, depth int, conditional bool) {
		if c == nil || seen[c.Name] || depth > 4 {
			return
		}
		seen[c.Name] = true
		for _, r := range c.Rules {
			if blocked {
				return
			}
			restricted := strings.Contains(r.Line, "--ctstate") || strings.Contains(r.Line, "--mark") || strings.Contains(r.Line, "--state")
			_, podSrc := podRangeOf(r.Source, pods)
			_, podDst := podRangeOf(r.Dest, pods)
			if r.Undecoded != "" && r.Target != "" && filter.Chain(r.Target) == nil {
				// Not fully decoded: it may accept pod traffic, and is no
				// proof that it drops any.
				if r.Target == "ACCEPT" {
					accepted = true
				}
				continue
			}
			switch r.Target {
			case "ACCEPT":
				if podSrc || podDst || (!conditional && matchesAll(r)) {
					accepted = true
				}
			case "DROP", "REJECT":
				if strings.HasPrefix(c.Name, "KUBE-") {
					continue // kube-proxy's own (invalid state, no endpoints)
				}
				switch {
				case podSrc || podDst:
					pr, ok := podRangeOf(r.Source, pods)
					if !ok {
						pr, _ = podRangeOf(r.Dest, pods)
					}
					dropped(c, r, "traffic of the pod range "+pr.String(), map[string]string{"pod_range": pr.Prefix.String(), "pod_range_source": pr.Source})
				case overlaps(r.Dest, svcs):
					dropped(c, r, "traffic to Service addresses", nil)
				case !conditional && !restricted && matchesAll(r) && !accepted:
					// firewalld's and hand-written catch-all rejects.
					dropped(c, r, "all forwarded traffic, pod traffic of "+rangesString(pods, 3)+" included,", nil)
					blocked = true
				}
			default:
				if r.Target != "" && filter.Chain(r.Target) != nil {
					walk(filter.Chain(r.Target), depth+1, conditional || !matchesAll(r))
				}
			}
		}
	}
	walk(fwd, 0, false)
	if fwd.Policy == "DROP" && !accepted && !blocked {
		p := pods[0]
		f := finding(check.SeverityProblem, "ForwardDropsPodTraffic", fmt.Sprintf(
			"the FORWARD policy is DROP (%s backend) and no rule accepts traffic from or to the pod ranges %s: pod-to-pod and pod-to-Service traffic through this node is dropped; "+
				"add e.g. iptables -A FORWARD -s %s -j ACCEPT and -d %s -j ACCEPT (or let the CNI's forward rules in)", backend, rangesString(pods, 4), p.Prefix, p.Prefix))
		f.Condition = check.ConditionNetworkConfig
		f.Details = map[string]string{"policy": fwd.Policy, "backend": backend, "pod_cidr": p.Prefix.String(), "pod_range_source": p.Source, "pod_ranges": rangesString(pods, 8)}
		out = append(out, f)
	}
	if len(out) == 0 {
		f := finding(check.SeverityOK, "ForwardAccepts", fmt.Sprintf("FORWARD (policy %s, %s backend) lets pod traffic of %s through", fwd.Policy, backend, rangesString(pods, 3)))
		f.Condition = check.ConditionNetworkConfig
		out = append(out, f)
	}
	return out
}
