package harness

import (
	"context"
	"fmt"
	"strings"
)

// ProxyRules returns kube-proxy's rules as text: `iptables-save -t nat`
// in iptables mode, `nft list table ip kube-proxy` in nftables mode.
func (c *Cluster) ProxyRules(ctx context.Context) (string, error) {
	if c.ProxyMode == "nftables" {
		return run(ctx, "nft", "list", "table", "ip", "kube-proxy")
	}
	return run(ctx, "iptables-save", "-t", "nat")
}

// ServiceProgrammed reports whether kube-proxy's rules route the
// Service's ClusterIP port to exactly endpoints endpoints, and says what
// is missing when not.
func (c *Cluster) ServiceProgrammed(ctx context.Context, ns, svc, portName, clusterIP string, endpoints int) (bool, string, error) {
	rules, err := c.ProxyRules(ctx)
	if err != nil {
		return false, "", err
	}
	if c.ProxyMode == "nftables" {
		// Chains are named service-<hash>-<ns>/<svc>/tcp/<port> and
		// endpoint-<hash>-<ns>/<svc>/tcp/<port>__<ip>/<port>; the ClusterIP
		// appears as an element of the service-ips map.
		id := fmt.Sprintf("%s/%s/tcp/%s", ns, svc, portName)
		var svcChain bool
		var eps int
		for _, l := range strings.Split(rules, "\n") {
			l = strings.TrimSpace(l)
			if strings.HasPrefix(l, "chain service-") && strings.Contains(l, "-"+id+" ") {
				svcChain = true
			}
			if strings.HasPrefix(l, "chain endpoint-") && strings.Contains(l, "-"+id+"__") {
				eps++
			}
		}
		switch {
		case !strings.Contains(rules, clusterIP+" . tcp . "):
			return false, "ClusterIP " + clusterIP + " not in the service-ips map", nil
		case !svcChain:
			return false, "no service chain for " + id, nil
		case eps != endpoints:
			return false, fmt.Sprintf("%d endpoint chains for %s, want %d", eps, id, endpoints), nil
		}
		return true, "", nil
	}
	// iptables: KUBE-SERVICES jumps to KUBE-SVC-<hash> for the ClusterIP,
	// which jumps to one KUBE-SEP-<hash> per endpoint.
	comment := fmt.Sprintf("%s/%s:%s", ns, svc, portName)
	var svcChain string
	for _, l := range strings.Split(rules, "\n") {
		if strings.HasPrefix(l, "-A KUBE-SERVICES ") && strings.Contains(l, "-d "+clusterIP+"/32") && strings.Contains(l, comment) {
			if f := strings.Fields(l); len(f) > 1 && f[len(f)-2] == "-j" && strings.HasPrefix(f[len(f)-1], "KUBE-SVC-") {
				svcChain = f[len(f)-1]
			}
		}
	}
	if svcChain == "" {
		return false, "no KUBE-SERVICES rule for " + clusterIP + " (" + comment + ")", nil
	}
	var eps int
	for _, l := range strings.Split(rules, "\n") {
		if strings.HasPrefix(l, "-A "+svcChain+" ") && strings.Contains(l, "-j KUBE-SEP-") {
			eps++
		}
	}
	if eps != endpoints {
		return false, fmt.Sprintf("%s jumps to %d KUBE-SEP chains, want %d", svcChain, eps, endpoints), nil
	}
	return true, "", nil
}
