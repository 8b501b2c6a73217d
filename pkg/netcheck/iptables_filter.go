package netcheck

import (
	"context"
	"errors"
	"fmt"
	"net/netip"
	"os/exec"
	"strings"
	"time"

	"github.com/node-doctor/node-doctor/pkg/check"
)

// IPTablesBackends finds KUBE-* chains in both the nft and the legacy
// iptables backend: kubelet, kube-proxy or the CNI disagree on which
// iptables they use, and rules in the backend kube-proxy no longer writes
// still match packets.
func IPTablesBackends(d KubeProxyDeps) check.Definition {
	return check.Definition{
		Name:        "iptables-backends",
		Area:        "network",
		Description: "Kubernetes' iptables chains live in one backend (nft or legacy), not both",
		Interval:    5 * time.Minute,
		Timeout:     30 * time.Second,
		Conditions:  []string{check.ConditionKubeProxyRules},
		Check: check.Func(func(ctx context.Context) ([]check.Finding, error) {
			if d.IPTables == nil {
				return nil, check.NotApplicable("no iptables-save available")
			}
			counts := map[string]int{}
			examples := map[string][]string{}
			for _, be := range []string{BackendNFT, BackendLegacy} {
				t := &IPTables{Tables: map[string]*IPTTable{}, ChainsOnly: true}
				for _, table := range []string{"nat", "filter", "mangle"} {
					if err := d.IPTables.Save(ctx, be, false, table, t); err != nil {
						if be == BackendLegacy && errors.Is(err, exec.ErrNotFound) {
							break // legacy tools missing: nothing can be there
						}
						if be == BackendLegacy {
							// Not reading it would hide chains there; in a
							// container this needs CAP_NET_RAW.
							return nil, fmt.Errorf("reading the legacy iptables backend: %w", err)
						}
						return nil, err
					}
				}
				for _, tb := range t.Tables {
					for _, c := range tb.Order {
						if strings.HasPrefix(c, "KUBE-") {
							counts[be]++
							if len(examples[be]) < 3 {
								examples[be] = append(examples[be], tb.Name+"/"+c)
							}
						}
					}
				}
			}
			nft, legacy := counts[BackendNFT], counts[BackendLegacy]
			if nft == 0 && legacy == 0 {
				return nil, check.NotApplicable("no KUBE-* iptables chains in either backend (nftables-mode kube-proxy, or no kube-proxy)")
			}
			if nft > 0 && legacy > 0 {
				f := finding(check.SeverityProblem, "KubeChainsInBothBackends", fmt.Sprintf(
					"KUBE-* chains are in both iptables backends (nft: %d, e.g. %s; legacy: %d, e.g. %s): kubelet, kube-proxy and the CNI must use the same iptables; "+
						"find which component uses the other one and remove its stale chains from that backend", nft, someOf(examples[BackendNFT], nft), legacy, someOf(examples[BackendLegacy], legacy)))
				f.Condition = check.ConditionKubeProxyRules
				f.Details = map[string]string{"nft_chains": fmt.Sprint(nft), "legacy_chains": fmt.Sprint(legacy)}
				return []check.Finding{f}, nil
			}
			be := BackendNFT
			if legacy > 0 {
				be = BackendLegacy
			}
			f := finding(check.SeverityOK, "SingleIPTablesBackend", fmt.Sprintf("Kubernetes' iptables chains are all in the %s backend", be))
			f.Condition = check.ConditionKubeProxyRules
			f.Details = map[string]string{"backend": be}
			return []check.Finding{f}, nil
		}),
	}
}

// ForwardSettings name the pod and service ranges when the Node object
// does not give them.
type ForwardSettings struct {
	PodCIDRs     []string `yaml:"podCIDRs"`
	ServiceCIDRs []string `yaml:"serviceCIDRs"`
}

// Validate parses the ranges.
func (s *ForwardSettings) Validate() error {
	for _, c := range append(append([]string{}, s.PodCIDRs...), s.ServiceCIDRs...) {
		if _, err := netip.ParsePrefix(c); err != nil {
			return fmt.Errorf("CIDR %q: %w", c, err)
		}
	}
	return nil
}

// ForwardPolicy checks the filter table's FORWARD path: a DROP policy needs
// a rule accepting pod traffic, and no rule outside Kubernetes' own chains
// may drop or reject traffic from or to the pod or service ranges.
func ForwardPolicy(d KubeProxyDeps) check.Definition {
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
			pods, svcs := parsePrefixes(s.PodCIDRs), parsePrefixes(s.ServiceCIDRs)
			if d.Services != nil {
				if n, err := d.Services.Node(); err == nil && n != nil && len(s.PodCIDRs) == 0 {
					cidrs := n.Spec.PodCIDRs
					if len(cidrs) == 0 && n.Spec.PodCIDR != "" {
						cidrs = []string{n.Spec.PodCIDR}
					}
					pods = parsePrefixes(cidrs)
				}
			}
			if len(pods) == 0 {
				return nil, check.NotApplicable("the pod CIDR of this node is not known (no spec.podCIDRs on the Node, or no cluster access, and no podCIDRs setting)")
			}
			if d.IPTables == nil {
				return nil, check.NotApplicable("no iptables-save available")
			}
			be := BackendNFT
			t := &IPTables{Tables: map[string]*IPTTable{}}
			if err := d.IPTables.Save(ctx, be, false, "filter", t); err != nil {
				return nil, err
			}
			// kube-proxy's backend if it is legacy.
			if t.Table("filter").Chain("KUBE-FORWARD") == nil {
				lt := &IPTables{Tables: map[string]*IPTTable{}}
				if err := d.IPTables.Save(ctx, BackendLegacy, false, "filter", lt); err == nil && lt.Table("filter").Chain("KUBE-FORWARD") != nil {
					t, be = lt, BackendLegacy
				}
			}
			return forwardFindings(t.Table("filter"), be, pods, svcs), nil
		}),
	}
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

// overlaps says an iptables address ("10.0.0.0/8", "1.2.3.4") overlaps one of ps.
func overlaps(addr string, ps []netip.Prefix) bool {
	if addr == "" || strings.HasPrefix(addr, "!") {
		return false
	}
	p, err := netip.ParsePrefix(addr)
	if err != nil {
		a, err := netip.ParseAddr(addr)
		if err != nil {
			return false
		}
		p = netip.PrefixFrom(a, a.BitLen())
	}
	for _, q := range ps {
		if q.Overlaps(p) {
			return true
		}
	}
	return false
}

// forwardFindings walks FORWARD and the chains it jumps to.
func forwardFindings(filter *IPTTable, backend string, pods, svcs []netip.Prefix) []check.Finding {
	fwd := filter.Chain("FORWARD")
	if fwd == nil {
		f := finding(check.SeverityOK, "ForwardAccepts", "no FORWARD chain in the filter table ("+backend+")")
		f.Condition = check.ConditionNetworkConfig
		return []check.Finding{f}
	}
	var out []check.Finding
	accepted := false
	seen := map[string]bool{}
	var walk func(c *IPTChain, depth int)
	walk = func(c *IPTChain, depth int) {
		if c == nil || seen[c.Name] || depth > 4 {
			return
		}
		seen[c.Name] = true
		for _, r := range c.Rules {
			restricted := strings.Contains(r.Line, "--ctstate") || strings.Contains(r.Line, "--mark") || strings.Contains(r.Line, "--state")
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
				if overlaps(r.Source, pods) || overlaps(r.Dest, pods) || (!restricted && r.Source == "" && r.Dest == "") {
					accepted = true
				}
			case "DROP", "REJECT":
				if strings.HasPrefix(c.Name, "KUBE-") {
					continue // kube-proxy's own (invalid state, no endpoints)
				}
				if overlaps(r.Source, pods) || overlaps(r.Dest, pods) || overlaps(r.Dest, svcs) {
					f := finding(check.SeverityProblem, "PodTrafficDropped", fmt.Sprintf(
						"filter chain %s %ss traffic of the pod or service range (%s): pods on this node lose that traffic; remove the rule unless it is meant to be there",
						c.Name, strings.ToLower(r.Target), r.Line))
					f.Condition = check.ConditionNetworkConfig
					f.Details = map[string]string{"chain": c.Name, "rule": r.Line, "backend": backend}
					out = append(out, f)
				}
			default:
				if r.Target != "" && filter.Chain(r.Target) != nil {
					walk(filter.Chain(r.Target), depth+1)
				}
			}
		}
	}
	walk(fwd, 0)
	if fwd.Policy == "DROP" && !accepted {
		f := finding(check.SeverityProblem, "ForwardDropsPodTraffic", fmt.Sprintf(
			"the FORWARD policy is DROP (%s backend) and no rule accepts traffic from or to the pod range %s: pod-to-pod and pod-to-Service traffic through this node is dropped; "+
				"add e.g. iptables -A FORWARD -s %s -j ACCEPT and -d %s -j ACCEPT (or let the CNI's forward rules in)", backend, pods[0], pods[0], pods[0]))
		f.Condition = check.ConditionNetworkConfig
		f.Details = map[string]string{"policy": fwd.Policy, "backend": backend, "pod_cidr": pods[0].String()}
		out = append(out, f)
	}
	if len(out) == 0 {
		f := finding(check.SeverityOK, "ForwardAccepts", fmt.Sprintf("FORWARD (policy %s, %s backend) lets pod traffic through", fwd.Policy, backend))
		f.Condition = check.ConditionNetworkConfig
		out = append(out, f)
	}
	return out
}
