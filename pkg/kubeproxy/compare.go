package kubeproxy

import (
	"github.com/node-doctor/node-doctor/pkg/dataplane"

	"fmt"
	"net"
	"slices"
	"strconv"
	"strings"
	"time"
)

// Programmed is kube-proxy's rules on this node reduced to what the
// comparison needs, the same shape for iptables and nftables.
type Programmed struct {
	Mode string
	// Services maps "ip/proto/port" to the chain ClusterIP, external and
	// load-balancer traffic goes to.
	Services map[string]string
	// NoEndpoints holds "ip/proto/port" that kube-proxy rejects or drops as
	// having no endpoints.
	NoEndpoints map[string]bool
	// NodePorts maps "proto/port" to a chain.
	NodePorts map[string]string
	// Endpoints maps a service chain to the "ip:port" it DNATs to.
	Endpoints map[string][]string
	// ServiceChains maps every per-service chain to the service it names
	// (from a rule comment or the chain name), for stale chains.
	ServiceChains map[string]string
	Rules         int
	// Unverifiable maps a chain, or "map NAME", that holds something the
	// reader could not decode to why; ports that depend on it are not judged.
	Unverifiable map[string]string
	// Unknown counts the undecoded rules and elements; UnknownExample is
	// the first one's raw form.
	Unknown        int
	UnknownExample string
	// Sets holds the elements of the nftables sets the comparison checks
	// (cluster-ips, nodeport-ips, hairpin-connections), each key's parts
	// joined by " . "; a set the table does not have is absent, and Sets
	// is nil in the other modes.
	Sets map[string]map[string]bool
	// NodePortIPs are node IPs nodeport-ips must hold, as far as node-doctor
	// can know them (see nodePortSetIPs); nil: not checked.
	NodePortIPs []string
}

// kube-proxy's nftables sets (pkg/proxy/nftables/proxier.go).
const (
	nftClusterIPsSet  = "cluster-ips"
	nftNodePortIPsSet = "nodeport-ips"
	nftHairpinSet     = "hairpin-connections"
)

func newProgrammed(mode string) *Programmed {
	return &Programmed{Mode: mode, Services: map[string]string{}, NoEndpoints: map[string]bool{},
		NodePorts: map[string]string{}, Endpoints: map[string][]string{}, ServiceChains: map[string]string{}}
}

func svcKey(ip, proto, port string) string { return ip + "/" + strings.ToLower(proto) + "/" + port }

// isIPTServiceChain says the chain is one kube-proxy makes per service or
// endpoint.
func isIPTServiceChain(name string) bool {
	for _, p := range []string{"KUBE-SVC-", "KUBE-SVL-", "KUBE-EXT-", "KUBE-FW-", "KUBE-SEP-"} {
		if strings.HasPrefix(name, p) {
			return true
		}
	}
	return false
}

// ProgrammedFromIPTables reads the nat and filter tables kube-proxy writes in
// iptables mode.
func ProgrammedFromIPTables(t *dataplane.IPTables) *Programmed {
	c := newIPTCollector()
	for _, table := range []string{"nat", "filter"} {
		tb := t.Table(table)
		if tb == nil {
			continue
		}
		for _, name := range tb.Order {
			for _, r := range tb.Chains[name].Rules {
				c.rule(table, name, r)
			}
		}
	}
	return c.finish(t.Table("nat"))
}

// iptCollector builds Programmed from nat and filter rules one at a time,
// so that a dump can be read without holding its rules (IPTables.Rules).
type iptCollector struct {
	p      *Programmed
	strs   dataplane.Interner
	seps   map[string][]string // KUBE-SVC/SVL chain -> KUBE-SEP chains it jumps to
	dnat   map[string]string   // chain -> its last DNAT destination
	owners map[string]string   // per-service chain -> service its first comment names
}

func newIPTCollector() *iptCollector {
	return &iptCollector{p: newProgrammed("iptables"), seps: map[string][]string{},
		dnat: map[string]string{}, owners: map[string]string{}}
}

func (c *iptCollector) rule(table, chain string, r dataplane.IPTRule) {
	p := c.p
	if r.Undecoded != "" {
		if table == "nat" {
			p.Rules++
		}
		p.Unknown++
		if p.Unverifiable == nil {
			p.Unverifiable = map[string]string{}
		}
		ch := c.strs.Get(chain)
		if _, ok := p.Unverifiable[ch]; !ok {
			p.Unverifiable[ch] = "rule not decoded: " + dataplane.Truncate(r.Undecoded, 200)
		}
		if p.UnknownExample == "" {
			p.UnknownExample = table + ": " + strings.Clone(r.Line) + " [not decoded: " + dataplane.Truncate(r.Undecoded, 200) + "]"
		}
		return
	}
	switch table {
	case "nat":
		p.Rules++
		switch {
		case chain == "KUBE-SERVICES":
			if r.Dest != "" && r.DPort != "" && isIPTServiceChain(r.Target) {
				p.Services[svcKey(stripHostMask(r.Dest), r.Proto, r.DPort)] = c.strs.Get(r.Target)
			}
		case chain == "KUBE-NODEPORTS":
			if r.DPort != "" && isIPTServiceChain(r.Target) {
				p.NodePorts[strings.ToLower(r.Proto)+"/"+r.DPort] = c.strs.Get(r.Target)
			}
		case isIPTServiceChain(chain):
			if r.Comment != "" {
				if _, ok := c.owners[chain]; !ok {
					c.owners[c.strs.Get(chain)] = c.strs.Get(commentOwner(r.Comment))
				}
			}
			if (strings.HasPrefix(chain, "KUBE-SVC-") || strings.HasPrefix(chain, "KUBE-SVL-")) && strings.HasPrefix(r.Target, "KUBE-SEP-") {
				k := c.strs.Get(chain)
				c.seps[k] = append(c.seps[k], c.strs.Get(r.Target))
			}
			if r.ToDest != "" {
				c.dnat[c.strs.Get(chain)] = strings.Clone(r.ToDest)
			}
		}
	case "filter":
		if (chain == "KUBE-SERVICES" || chain == "KUBE-EXTERNAL-SERVICES") &&
			(r.Target == "REJECT" || r.Target == "DROP") && r.Dest != "" && r.DPort != "" {
			p.NoEndpoints[svcKey(stripHostMask(r.Dest), r.Proto, r.DPort)] = true
		}
	}
}

// finish resolves each service chain's endpoints through the nat table's
// chains.
func (c *iptCollector) finish(nat *dataplane.IPTTable) *Programmed {
	p := c.p
	if nat == nil {
		return p
	}
	for name := range nat.Chains {
		if !isIPTServiceChain(name) {
			continue
		}
		p.ServiceChains[name] = c.owners[name]
		if !strings.HasPrefix(name, "KUBE-SVC-") && !strings.HasPrefix(name, "KUBE-SVL-") {
			continue
		}
		eps := []string{}
		for _, sep := range c.seps[name] {
			ep := "missing chain " + sep
			if nat.Chain(sep) != nil {
				ep = "no DNAT in " + sep
				if d, ok := c.dnat[sep]; ok {
					ep = d
				}
			}
			eps = append(eps, ep)
		}
		slices.Sort(eps)
		p.Endpoints[name] = eps
	}
	return p
}

// commentOwner is the service a kube-proxy rule comment names
// ("ns/name:port", its first word).
func commentOwner(s string) string {
	if i := strings.IndexAny(s, " "); i > 0 {
		return s[:i]
	}
	return s
}

func stripHostMask(s string) string {
	s = strings.TrimSuffix(s, "/32")
	return strings.TrimSuffix(s, "/128")
}

// ProgrammedFromNFT reads kube-proxy's nftables table.
func ProgrammedFromNFT(t *dataplane.NFTTable) *Programmed {
	p := newProgrammed("nftables")
	for _, c := range t.Chains {
		p.Rules += c.Rules
	}
	for _, u := range t.Unknown {
		if p.Unverifiable == nil {
			p.Unverifiable = map[string]string{}
			p.UnknownExample = u.Where + ": " + u.Why + ": " + u.Raw
		}
		p.Unknown++
		where := strings.TrimPrefix(u.Where, "chain ")
		if _, ok := p.Unverifiable[where]; !ok {
			p.Unverifiable[where] = u.Why
		}
	}
	for _, name := range []string{nftClusterIPsSet, nftNodePortIPsSet, nftHairpinSet} {
		st := t.Sets[name]
		if st == nil {
			continue // an older kube-proxy without it, or not in use
		}
		if p.Sets == nil {
			p.Sets = map[string]map[string]bool{}
		}
		m := make(map[string]bool, len(st.Elements))
		for _, e := range st.Elements {
			if len(e.Key) == 1 {
				m[e.Key[0]] = true
			} else {
				m[strings.Join(e.Key, " . ")] = true
			}
		}
		p.Sets[name] = m
	}
	if m := t.Maps["service-ips"]; m != nil {
		for _, e := range m.Elements {
			if len(e.Key) == 3 {
				p.Services[svcKey(e.Key[0], e.Key[1], e.Key[2])] = e.Target
			}
		}
	}
	if m := t.Maps["no-endpoint-services"]; m != nil {
		for _, e := range m.Elements {
			if len(e.Key) == 3 {
				p.NoEndpoints[svcKey(e.Key[0], e.Key[1], e.Key[2])] = true
			}
		}
	}
	if m := t.Maps["service-nodeports"]; m != nil {
		for _, e := range m.Elements {
			if len(e.Key) == 2 {
				p.NodePorts[strings.ToLower(e.Key[0])+"/"+e.Key[1]] = e.Target
			}
		}
	}
	for name, c := range t.Chains {
		if !strings.Contains(name, "/") { // kube-proxy's fixed chains have no slash
			continue
		}
		p.ServiceChains[name] = nftChainOwner(name)
		if !strings.HasPrefix(name, "service-") && !strings.HasPrefix(name, "local-") {
			continue
		}
		eps := append([]string{}, c.DNAT...)
		for _, j := range c.Jumps { // versions with per-endpoint chains
			if ec := t.Chains[j]; ec != nil && strings.HasPrefix(j, "endpoint-") {
				eps = append(eps, ec.DNAT...)
				if why, ok := p.Unverifiable[j]; ok {
					if _, ok := p.Unverifiable[name]; !ok {
						p.Unverifiable[name] = why
					}
				}
			}
		}
		slices.Sort(eps)
		p.Endpoints[name] = eps
	}
	return p
}

// nftChainOwner turns "service-HASH-ns/name/tcp/port" into "ns/name:port".
func nftChainOwner(chain string) string {
	i := strings.IndexByte(chain, '/')
	if i < 0 {
		return chain
	}
	j := strings.LastIndexByte(chain[:i], '-')
	if j < 0 {
		return chain
	}
	parts := strings.Split(chain[j+1:], "/")
	if len(parts) < 4 {
		return chain
	}
	port := strings.SplitN(parts[3], "__", 2)[0]
	if port == "" {
		return parts[0] + "/" + parts[1]
	}
	return parts[0] + "/" + parts[1] + ":" + port
}

// Discrepancy is one difference between the API and this node's rules.
type Discrepancy struct {
	// Service is "ns/name:port" (or the chain's owner for stale chains).
	Service  ServicePortName
	Reason   string
	Message  string
	Expected string
	Actual   string
	IPv6     bool
	// Changed is when the Service or its slices last changed in the API.
	Changed time.Time
	// Key identifies the discrepancy across runs.
	Key string
	// Unverifiable says why the rules this difference rests on could not be
	// read whole: it is not a finding (Reason is RulesNotUnderstood).
	Unverifiable string
}

// unverifiable returns why a port's differences cannot be trusted: a map
// holds an undecoded element, or a chain its traffic passes (the shared
// entry chains, its own, its endpoints') an undecoded rule.
func (p *Programmed) unverifiable(ch ExpectedChains, got string) string {
	if len(p.Unverifiable) == 0 {
		return ""
	}
	chains := append([]string{"KUBE-SERVICES", "KUBE-NODEPORTS", "KUBE-EXTERNAL-SERVICES", got, ch.Internal, ch.External}, ch.All...)
	for _, e := range p.Endpoints[got] {
		if sep, ok := strings.CutPrefix(e, "no DNAT in "); ok {
			chains = append(chains, sep)
		}
	}
	for _, c := range chains {
		if why, ok := p.Unverifiable[c]; ok && c != "" {
			return "chain " + c + ": " + why
		}
	}
	for w, why := range p.Unverifiable {
		if strings.HasPrefix(w, "map ") { // a set's unknowns only touch that set's checks
			return w + ": " + why
		}
	}
	return ""
}

// ExpectedChains names the chains kube-proxy uses for a port in a mode.
type ExpectedChains struct {
	Internal, External string
	All                []string
}

// ChainsFor returns the chains kube-proxy must have for d.
func ChainsFor(mode string, d *DesiredPort) ExpectedChains {
	var svc, svl, ext, fw string
	if mode == "ipvs" {
		c := ipvsChain(svcKey(d.ClusterIP, d.Name.Protocol, strconv.Itoa(int(d.Port))))
		return ExpectedChains{Internal: c, External: c}
	}
	if mode == "nftables" {
		c := NFTablesChainsFor(d.Name)
		svc, svl, ext, fw = c.Service, c.Local, c.External, c.Firewall
	} else {
		c := IPTablesChainsFor(d.Name)
		svc, svl, ext, fw = c.SVC, c.SVL, c.EXT, c.FW
	}
	_ = fw
	e := ExpectedChains{Internal: svc, External: ext}
	if d.InternalLocal {
		e.Internal = svl
	}
	if !d.HasEndpoints {
		return e
	}
	if len(d.Cluster) > 0 && d.usesCluster() {
		e.All = append(e.All, svc)
	}
	if len(d.Local) > 0 && d.usesLocal() {
		e.All = append(e.All, svl)
	}
	if d.ExternallyAccessible() {
		e.All = append(e.All, ext)
	}
	if mode != "nftables" {
		for _, ep := range d.ReachableEndpoints() {
			e.All = append(e.All, IPTablesEndpointChain(d.Name, ep))
		}
	}
	return e
}

// Compare lists every difference between the desired ports of one family and
// what is programmed. Ports with no endpoints anywhere are counted in
// noEndpoints, not reported, unless the node still sends them somewhere.
func Compare(desired []DesiredPort, p *Programmed) (disc []Discrepancy, verified, noEndpoints int) {
	wanted := map[string]bool{}
	sets := newSetWants(p)
	for i := range desired {
		d := &desired[i]
		ch := ChainsFor(p.Mode, d)
		for _, c := range ch.All {
			wanted[c] = true
		}
		port := strconv.Itoa(int(d.Port))
		key := svcKey(d.ClusterIP, d.Name.Protocol, port)
		add := func(reason, expected, actual, msg string) {
			disc = append(disc, Discrepancy{Service: d.Name, Reason: reason, Expected: expected, Actual: actual,
				Message: msg, Changed: d.Changed, Key: d.Name.String() + "/" + d.Name.Protocol + "|" + reason + "|" + expected})
		}
		got, ok := p.Services[key]
		before := len(disc)
		disc = p.compareSets(d, sets, disc)
		switch {
		case !d.HasEndpoints:
			noEndpoints++
			if ok && len(p.Endpoints[got]) > 0 {
				add("StaleServiceRules", "no endpoints (REJECT)", fmt.Sprintf("%s -> %s DNAT to %s", key, got, strings.Join(p.Endpoints[got], ", ")),
					"the API has no ready endpoints but this node still DNATs the ClusterIP to old pods")
			}
			continue
		case !d.HasInternalEndpoints():
			// internalTrafficPolicy Local with no local endpoint: dropped here.
			if ok && len(p.Endpoints[got]) > 0 {
				add("StaleServiceRules", "no local endpoints (DROP)", fmt.Sprintf("%s -> %s DNAT to %s", key, got, strings.Join(p.Endpoints[got], ", ")),
					"internalTrafficPolicy is Local and no endpoint is on this node, but the node still DNATs the ClusterIP")
			}
		case !ok && p.NoEndpoints[key]:
			add("EndpointsNotProgrammed", fmt.Sprintf("%s -> %s (%s)", key, ch.Internal, strings.Join(d.InternalEndpoints(), ", ")), key+" rejected as having no endpoints",
				fmt.Sprintf("the API has %d endpoints but this node rejects the ClusterIP as having none", len(d.InternalEndpoints())))
		case !ok:
			add("ServicePortNotProgrammed", fmt.Sprintf("%s -> %s", key, ch.Internal), "no rule for "+key,
				"the ClusterIP has no rule on this node, so connections to it fail")
		case got != ch.Internal:
			add("ServiceWrongChain", fmt.Sprintf("%s -> %s", key, ch.Internal), fmt.Sprintf("%s -> %s", key, got),
				"the ClusterIP goes to a chain that is not this service port's")
		default:
			for _, x := range compareEndpoints(d, got, d.InternalEndpoints(), p.Endpoints[got]) {
				x.Changed = d.Changed
				disc = append(disc, x)
			}
		}
		if d.HasEndpoints {
			if d.NodePort > 0 && p.NodePorts != nil { // IPVS: one virtual server per node IP, not compared
				np := d.Name.Protocol + "/" + strconv.Itoa(int(d.NodePort))
				if t, ok := p.NodePorts[np]; !ok {
					add("NodePortNotProgrammed", np+" -> "+ch.External, "no rule for NodePort "+np, "the NodePort has no rule on this node")
				} else if t != ch.External && t != ch.Internal {
					add("NodePortWrongChain", np+" -> "+ch.External, np+" -> "+t, "the NodePort goes to a chain that is not this service port's")
				}
			}
			for _, ip := range d.ExternalIPs {
				k := svcKey(ip, d.Name.Protocol, port)
				if t, ok := p.Services[k]; !ok {
					add("ExternalIPNotProgrammed", k+" -> "+ch.External, "no rule for "+k, "the external/load-balancer IP has no rule on this node")
				} else if t != ch.External && t != ch.Internal && p.Mode != "ipvs" {
					add("ExternalIPWrongChain", k+" -> "+ch.External, k+" -> "+t, "the external/load-balancer IP goes to a chain that is not this service port's")
				}
			}
		}
		if len(disc) > before {
			if why := p.unverifiable(ch, got); why != "" {
				for i := before; i < len(disc); i++ {
					x := &disc[i]
					x.Unverifiable = why
					x.Message = "not compared: node-doctor could not decode part of these rules (" + why + "); " + x.Reason + " would be reported"
					x.Reason = "RulesNotUnderstood"
					x.Key = d.Name.String() + "/" + d.Name.Protocol + "|unverifiable"
				}
				disc = disc[:before+1] // one per port
			}
		}
		if len(disc) == before {
			verified++
		}
	}
	disc = p.staleSetElements(sets, disc)
	for chain, owner := range p.ServiceChains {
		if wanted[chain] {
			continue
		}
		disc = append(disc, Discrepancy{Service: parseOwner(owner), Reason: "StaleServiceChain", Expected: "no chain " + chain,
			Actual: fmt.Sprintf("chain %s (%s)", chain, owner), Key: "stale|" + chain,
			Message: "a chain for a service port or endpoint the API no longer has is still programmed"})
	}
	slices.SortFunc(disc, func(a, b Discrepancy) int { return strings.Compare(a.Key, b.Key) })
	return disc, verified, noEndpoints
}

// compareEndpoints reports endpoints missing, extra (stale DNAT) or on the
// wrong port in one service chain.
func compareEndpoints(d *DesiredPort, chain string, want, got []string) []Discrepancy {
	var out []Discrepancy
	if d.Topology != "" && !d.InternalLocal {
		chain += " (" + d.Topology + ")"
	}
	missing := setDiff(want, got)
	extra := setDiff(got, want)
	hosts := func(l []string) map[string]string {
		m := map[string]string{}
		for _, e := range l {
			h, _, err := net.SplitHostPort(e)
			if err != nil {
				h = e
			}
			m[h] = e
		}
		return m
	}
	extraHosts := hosts(extra)
	for _, m := range missing {
		h, _, _ := net.SplitHostPort(m)
		if x, ok := extraHosts[h]; ok {
			out = append(out, Discrepancy{Service: d.Name, Reason: "EndpointWrongPort", Expected: chain + " DNAT to " + m, Actual: chain + " DNAT to " + x,
				Key: d.Name.String() + "/" + d.Name.Protocol + "|port|" + m, Message: "an endpoint is programmed with a port the API does not have"})
			delete(extraHosts, h)
			extra = slices.DeleteFunc(extra, func(e string) bool { return e == x })
			continue
		}
		out = append(out, Discrepancy{Service: d.Name, Reason: "EndpointMissing", Expected: chain + " DNAT to " + m, Actual: "no DNAT to " + m + " (has: " + orNone(got) + ")",
			Key: d.Name.String() + "/" + d.Name.Protocol + "|missing|" + m, Message: "a ready endpoint gets no traffic from this node"})
	}
	for _, x := range extra {
		out = append(out, Discrepancy{Service: d.Name, Reason: "StaleEndpoint", Expected: "no DNAT to " + x + " (want: " + strings.Join(want, ", ") + ")", Actual: chain + " DNAT to " + x,
			Key: d.Name.String() + "/" + d.Name.Protocol + "|stale|" + x, Message: "this node still sends part of the traffic to an endpoint the API no longer has"})
	}
	return out
}

func setDiff(a, b []string) []string {
	var out []string
	for _, x := range a {
		if !slices.Contains(b, x) {
			out = append(out, x)
		}
	}
	return out
}

// parseOwner turns "ns/name:port" back into a ServicePortName.
func parseOwner(s string) ServicePortName {
	var n ServicePortName
	ns, rest, ok := strings.Cut(s, "/")
	if !ok {
		n.Name = s
		return n
	}
	n.Namespace = ns
	n.Name, n.Port, _ = strings.Cut(rest, ":")
	return n
}

func orNone(l []string) string {
	if len(l) == 0 {
		return "none"
	}
	return strings.Join(l, ", ")
}
