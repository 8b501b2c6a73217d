package harness

import (
	"context"
	"fmt"
	"regexp"
	"sort"
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

// endpointRE matches a DNAT target: "10.244.0.2:8080" (iptables, nft
// single endpoint) or "10.244.0.2 . 8080" (nft numgen map element).
var endpointRE = regexp.MustCompile(`(\d+\.\d+\.\d+\.\d+)(?::| \. )(\d+)`)

// ServiceProgrammed reports whether kube-proxy's rules send the Service
// port's ClusterIP to exactly the given endpoint pod IPs, and says what
// is missing when not.
func (c *Cluster) ServiceProgrammed(ctx context.Context, ns, svc, portName, clusterIP string, podIPs []string) (bool, string, error) {
	rules, err := c.ProxyRules(ctx)
	if err != nil {
		return false, "", err
	}
	var got []string
	if c.ProxyMode == "nftables" {
		got, err = nftServiceEndpoints(rules, ns, svc, portName, clusterIP)
	} else {
		got, err = iptablesServiceEndpoints(rules, ns, svc, portName, clusterIP)
	}
	if err != nil {
		return false, err.Error(), nil
	}
	want := append([]string(nil), podIPs...)
	sort.Strings(want)
	if strings.Join(got, ",") != strings.Join(want, ",") {
		return false, fmt.Sprintf("%s/%s:%s DNATs to %v, want %v", ns, svc, portName, got, want), nil
	}
	return true, "", nil
}

// iptablesServiceEndpoints follows KUBE-SERVICES -> KUBE-SVC-* -> KUBE-SEP-*
// for the ClusterIP and returns the sorted DNAT destination IPs.
func iptablesServiceEndpoints(rules, ns, svc, portName, clusterIP string) ([]string, error) {
	comment := fmt.Sprintf("%s/%s:%s", ns, svc, portName)
	lines := strings.Split(rules, "\n")
	var svcChain string
	for _, l := range lines {
		if strings.HasPrefix(l, "-A KUBE-SERVICES ") && strings.Contains(l, "-d "+clusterIP+"/32") && strings.Contains(l, comment) {
			if f := strings.Fields(l); len(f) > 1 && f[len(f)-2] == "-j" && strings.HasPrefix(f[len(f)-1], "KUBE-SVC-") {
				svcChain = f[len(f)-1]
			}
		}
	}
	if svcChain == "" {
		return nil, fmt.Errorf("no KUBE-SERVICES rule for %s (%s)", clusterIP, comment)
	}
	seps := map[string]bool{}
	for _, l := range lines {
		if f := strings.Fields(l); strings.HasPrefix(l, "-A "+svcChain+" ") && len(f) > 1 && f[len(f)-2] == "-j" &&
			strings.HasPrefix(f[len(f)-1], "KUBE-SEP-") {
			seps[f[len(f)-1]] = true
		}
	}
	var ips []string
	for _, l := range lines {
		f := strings.Fields(l)
		if len(f) < 2 || f[0] != "-A" || !seps[f[1]] {
			continue
		}
		if i := strings.Index(l, "--to-destination "); i >= 0 {
			if m := endpointRE.FindStringSubmatch(l[i:]); m != nil {
				ips = append(ips, m[1])
			}
		}
	}
	sort.Strings(ips)
	return ips, nil
}

// nftServiceEndpoints finds the service-ips map element for the ClusterIP,
// follows it to the service chain and returns the sorted DNAT IPs, whether
// inline (dnat to / numgen map) or in separate endpoint chains.
func nftServiceEndpoints(rules, ns, svc, portName, clusterIP string) ([]string, error) {
	id := fmt.Sprintf("%s/%s/tcp/%s", ns, svc, portName)
	if !strings.Contains(rules, clusterIP+" . tcp . ") {
		return nil, fmt.Errorf("ClusterIP %s not in the service-ips map", clusterIP)
	}
	var ips []string
	var inChain, found bool
	for _, l := range strings.Split(rules, "\n") {
		t := strings.TrimSpace(l)
		if strings.HasPrefix(t, "chain ") {
			name := strings.TrimSuffix(strings.TrimPrefix(t, "chain "), " {")
			inChain = (strings.HasPrefix(name, "service-") && strings.HasSuffix(name, "-"+id)) ||
				(strings.HasPrefix(name, "endpoint-") && strings.Contains(name, "-"+id+"__"))
			found = found || inChain
			continue
		}
		if inChain && strings.Contains(t, "dnat") {
			for _, m := range endpointRE.FindAllStringSubmatch(t, -1) {
				ips = append(ips, m[1])
			}
		}
	}
	if !found {
		return nil, fmt.Errorf("no service chain for %s", id)
	}
	sort.Strings(ips)
	return ips, nil
}
