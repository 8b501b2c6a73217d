package kubeproxy

import (
	"github.com/node-doctor/node-doctor/pkg/dataplane"

	"context"
	"fmt"
	"net"
	"slices"
	"strconv"
	"strings"
	"time"

	corev1 "k8s.io/api/core/v1"
	discoveryv1 "k8s.io/api/discovery/v1"
)

// Hop statuses of a ServicePath.
const (
	HopOK      = "ok"
	HopMissing = "missing"
	HopStale   = "stale"
	HopWrong   = "wrong"
)

// ServicePath is this node's kube-proxy path for one Service, rule by rule,
// set against the Service and its EndpointSlices in the API.
type ServicePath struct {
	Service string `json:"service"`
	Node    string `json:"node"`
	Mode    string `json:"mode"`
	// Backend is the iptables backend holding kube-proxy's rules.
	Backend string     `json:"iptables_backend,omitempty"`
	Ports   []PortPath `json:"ports"`
	// Notes are facts about the whole path (kube-proxy did not answer...).
	Notes []string `json:"notes,omitempty"`
}

// PortPath is one service port in one IP family.
type PortPath struct {
	Port        string   `json:"port"`
	Protocol    string   `json:"protocol"`
	Family      string   `json:"family"`
	ClusterIP   string   `json:"cluster_ip"`
	ServicePort int32    `json:"service_port"`
	NodePort    int32    `json:"node_port,omitempty"`
	ExternalIPs []string `json:"external_ips,omitempty"`
	// Endpoints are what this node must send the ClusterIP to, from the API.
	Endpoints []string `json:"endpoints"`
	Topology  string   `json:"topology,omitempty"`
	// Changed is when the Service or its slices last changed.
	Changed  time.Time     `json:"changed,omitempty"`
	Hops     []Hop         `json:"hops"`
	Problems []PathProblem `json:"problems,omitempty"`
}

// Hop is one rule, map element or virtual server on the path.
type Hop struct {
	Status string `json:"status"`
	// Where is the table and chain, map or "ipvs".
	Where string `json:"where"`
	Rule  string `json:"rule"`
	Note  string `json:"note,omitempty"`
}

// PathProblem is one difference between the API and this node's rules.
type PathProblem struct {
	Reason   string `json:"reason"`
	Message  string `json:"message"`
	Expected string `json:"expected,omitempty"`
	Actual   string `json:"actual,omitempty"`
	Fix      string `json:"fix"`
}

// Broken says some port of the Service does not work from this node.
func (p *ServicePath) Broken() bool {
	for _, pp := range p.Ports {
		if len(pp.Problems) > 0 {
			return true
		}
	}
	return false
}

const (
	fixKubeProxy   = "check kube-proxy's log on this node for sync errors, then restart kube-proxy here to rewrite its rules"
	fixNoEndpoints = "no pod backs this port: kubectl get endpointslices -n %s -l kubernetes.io/service-name=%s, and check the pods its selector picks are Ready"
)

// ExplainService walks this node's rules for one Service (svc with its
// slices; port "" or a port name or number picks the ports).
func ExplainService(ctx context.Context, d KubeProxyDeps, s *KubeProxySettings, svc *corev1.Service,
	epSlices []*discoveryv1.EndpointSlice, node *corev1.Node, nodeName, port string) (*ServicePath, error) {
	if s == nil {
		s = DefaultKubeProxySettings()
	}
	out := &ServicePath{Service: svc.Namespace + "/" + svc.Name, Node: nodeName}
	if svc.Spec.Type == corev1.ServiceTypeExternalName {
		return nil, fmt.Errorf("%s is an ExternalName Service (%s): it is a DNS alias, kube-proxy programs nothing for it", out.Service, svc.Spec.ExternalName)
	}
	if svc.Spec.ClusterIP == corev1.ClusterIPNone {
		return nil, fmt.Errorf("%s is a headless Service: DNS returns its pods' addresses and kube-proxy programs nothing for it", out.Service)
	}
	if p := svc.Labels[serviceProxyNameLabel]; p != "" {
		return nil, fmt.Errorf("%s is implemented by %q (label %s), not by kube-proxy", out.Service, p, serviceProxyNameLabel)
	}
	desired := DesiredServicePortsOn([]*corev1.Service{svc}, epSlices, NodeTopologyOf(nodeName, node))
	if port != "" {
		desired = slices.DeleteFunc(desired, func(dp DesiredPort) bool {
			return dp.Name.Port != port && strconv.Itoa(int(dp.Port)) != port
		})
		if len(desired) == 0 {
			var have []string
			for _, p := range svc.Spec.Ports {
				have = append(have, fmt.Sprintf("%s %d", orDash(p.Name), p.Port))
			}
			return nil, fmt.Errorf("%s has no port %q (it has: %s)", out.Service, port, strings.Join(have, ", "))
		}
	}
	kp := d.API(s)
	mode := s.Mode
	if mode == "" {
		m, err := kp.ProxyMode(ctx)
		if err != nil {
			out.Notes = append(out.Notes, fmt.Sprintf("kube-proxy did not answer /proxyMode on %s (%v): walked the rules found on the node", s.MetricsAddress, err))
		}
		mode = m
	}
	var view *ruleView
	var err error
	switch mode {
	case "nftables":
		view, err = nftView(ctx, d)
	case "iptables":
		view, err = iptView(ctx, d, desired)
	case "ipvs":
		view, err = ipvsView(ctx, d)
	case "kernelspace":
		return nil, fmt.Errorf("kube-proxy runs in kernelspace (Windows) mode")
	case "":
		if view, err = nftView(ctx, d); err == nil && view == nil {
			view, err = iptView(ctx, d, desired)
		}
	default:
		return nil, fmt.Errorf("kube-proxy reports unknown mode %q", mode)
	}
	if err != nil {
		return nil, err
	}
	if view == nil {
		if mode == "" {
			return nil, fmt.Errorf("no kube-proxy rules on this node and kube-proxy does not answer on %s: Services here are implemented by something else", s.MetricsAddress)
		}
		return nil, fmt.Errorf("kube-proxy says it runs in %s mode but none of its rules are on this node", mode)
	}
	out.Mode, out.Backend = view.mode, view.backend
	for _, v6 := range []bool{false, true} {
		if view.progs[v6] == nil {
			continue
		}
		var fam []DesiredPort
		for _, dp := range desired {
			if dp.IPv6 == v6 {
				fam = append(fam, dp)
			}
		}
		disc, _, _ := Compare(fam, view.progs[v6])
		if view.mode == "ipvs" {
			disc, _ = CompareIPVSNode(fam, v6, view.ipvs, node, disc, 0)
		}
		for i := range fam {
			out.Ports = append(out.Ports, view.walk(&fam[i], v6, disc))
		}
	}
	for _, dp := range desired {
		if view.progs[dp.IPv6] == nil {
			out.Ports = append(out.Ports, PortPath{Port: dp.Name.String(), Protocol: strings.ToUpper(dp.Name.Protocol), Family: family(dp.IPv6),
				ClusterIP: dp.ClusterIP, ServicePort: dp.Port, Endpoints: dp.InternalEndpoints(),
				Problems: []PathProblem{{Reason: "FamilyNotProgrammed", Message: "kube-proxy has no " + family(dp.IPv6) + " rules on this node", Fix: fixKubeProxy}}})
		}
	}
	slices.SortStableFunc(out.Ports, func(a, b PortPath) int {
		return strings.Compare(a.Family+a.Port+a.Protocol, b.Family+b.Port+b.Protocol)
	})
	return out, nil
}

func orDash(s string) string {
	if s == "" {
		return "-"
	}
	return s
}

func family(v6 bool) string {
	if v6 {
		return "IPv6"
	}
	return "IPv4"
}

// ruleView is what one mode programmed: the common view the comparison
// reads, plus the rules behind it for the walk.
type ruleView struct {
	mode, backend string
	progs         map[bool]*Programmed
	ipt           map[bool]*iptRules
	nft           map[bool]*dataplane.NFTTable
	ipvs          *IPVSNode
}

// iptRules keeps the rules of the chains a walk may visit.
type iptRules struct {
	nat, filter map[string][]dataplane.IPTRule
}

// iptKept says a rule may be on the path of one of the desired ports: every
// rule of the service's own chains, and the entry rules that name it.
func iptKept(desired []DesiredPort) func(chain string, r dataplane.IPTRule) bool {
	names := map[string]bool{}
	chains := map[string]bool{}
	for i := range desired {
		d := &desired[i]
		names[d.Name.Namespace+"/"+d.Name.Name] = true
		c := IPTablesChainsFor(d.Name)
		for _, n := range []string{c.SVC, c.SVL, c.EXT, c.FW} {
			chains[n] = true
		}
	}
	return func(chain string, r dataplane.IPTRule) bool {
		if chains[chain] {
			return true
		}
		owner := commentService(r.Comment)
		return owner != "" && names[owner]
	}
}

// commentService is the "ns/name" a kube-proxy comment is about, wherever in
// the comment it is ("dp/web:http cluster IP", "pod traffic for dp/np-local
// external destinations").
func commentService(c string) string {
	for _, w := range strings.Fields(c) {
		if strings.Count(w, "/") == 1 && !strings.ContainsAny(w, ".") {
			name, _, _ := strings.Cut(w, ":")
			return name
		}
	}
	return ""
}

func cloneRule(r dataplane.IPTRule) dataplane.IPTRule {
	r.Line = strings.Clone(r.Line)
	r.Target, r.Comment = strings.Clone(r.Target), strings.Clone(r.Comment)
	r.Source, r.Dest = strings.Clone(r.Source), strings.Clone(r.Dest)
	r.Proto, r.DPort, r.ToDest = strings.Clone(r.Proto), strings.Clone(r.DPort), strings.Clone(r.ToDest)
	return r
}

// iptView reads nat and filter of both families from the backend holding
// KUBE-SERVICES, as the check does, keeping the desired ports' rules.
func iptView(ctx context.Context, d KubeProxyDeps, desired []DesiredPort) (*ruleView, error) {
	if d.IPTables == nil {
		return nil, nil
	}
	keep := iptKept(desired)
	read := func(be string, v6 bool) (*Programmed, *iptRules, bool, error) {
		col := newIPTCollector()
		kept := &iptRules{nat: map[string][]dataplane.IPTRule{}, filter: map[string][]dataplane.IPTRule{}}
		t := &dataplane.IPTables{Tables: map[string]*dataplane.IPTTable{}, Rules: func(table, chain string, r dataplane.IPTRule) {
			col.rule(table, chain, r)
			if keep(chain, r) {
				m := kept.nat
				if table == "filter" {
					m = kept.filter
				}
				m[strings.Clone(chain)] = append(m[strings.Clone(chain)], cloneRule(r))
			}
		}}
		if err := d.IPTables.Save(ctx, be, v6, "nat", t); err != nil {
			return nil, nil, false, err
		}
		if t.Table("nat").Chain("KUBE-SERVICES") == nil {
			return nil, nil, false, nil
		}
		if err := d.IPTables.Save(ctx, be, v6, "filter", t); err != nil {
			return nil, nil, false, err
		}
		return col.finish(t.Table("nat")), kept, true, nil
	}
	for _, be := range []string{dataplane.BackendNFT, dataplane.BackendLegacy} {
		p4, r4, ok, err := read(be, false)
		if err != nil {
			if be == dataplane.BackendLegacy {
				continue
			}
			return nil, err
		}
		if !ok {
			continue
		}
		v := &ruleView{mode: "iptables", backend: be, progs: map[bool]*Programmed{false: p4}, ipt: map[bool]*iptRules{false: r4}}
		if p6, r6, ok, err := read(be, true); err == nil && ok {
			v.progs[true], v.ipt[true] = p6, r6
		}
		return v, nil
	}
	return nil, nil
}

func nftView(ctx context.Context, d KubeProxyDeps) (*ruleView, error) {
	if d.NFT == nil {
		return nil, nil
	}
	v := &ruleView{mode: "nftables", progs: map[bool]*Programmed{}, nft: map[bool]*dataplane.NFTTable{}}
	for _, v6 := range []bool{false, true} {
		t := dataplane.NewNFTTable()
		ok, err := d.NFT.ListTable(ctx, nftFamily(v6), "kube-proxy", t)
		if err != nil {
			return nil, err
		}
		if ok {
			v.progs[v6], v.nft[v6] = ProgrammedFromNFT(t), t
		}
	}
	if len(v.progs) == 0 {
		return nil, nil
	}
	return v, nil
}

func nftFamily(v6 bool) string {
	if v6 {
		return "ip6"
	}
	return "ip"
}

func ipvsView(ctx context.Context, d KubeProxyDeps) (*ruleView, error) {
	if d.IPVS == nil {
		return nil, fmt.Errorf("kube-proxy runs in IPVS mode and node-doctor was built without an IPVS reader")
	}
	p, n, err := readIPVS(ctx, d.IPVS)
	if err != nil {
		return nil, err
	}
	return &ruleView{mode: "ipvs", progs: p, ipvs: n}, nil
}

// walk lists the hops of one port and the problems on them.
func (v *ruleView) walk(d *DesiredPort, v6 bool, disc []Discrepancy) PortPath {
	pp := PortPath{Port: d.Name.String(), Protocol: strings.ToUpper(d.Name.Protocol), Family: family(v6), ClusterIP: d.ClusterIP,
		ServicePort: d.Port, NodePort: d.NodePort, ExternalIPs: d.ExternalIPs, Endpoints: d.InternalEndpoints(), Topology: d.Topology, Changed: d.Changed}
	if pp.Endpoints == nil {
		pp.Endpoints = []string{}
	}
	w := &walker{d: d, pp: &pp, wanted: map[string]bool{}, endpoints: map[string]bool{}, seen: map[string]bool{}, reached: map[string]bool{}}
	ch := ChainsFor(v.mode, d)
	for _, c := range ch.All {
		w.wanted[c] = true
	}
	for _, e := range d.ReachableEndpoints() {
		w.endpoints[e] = true
	}
	w.ch = ch
	switch v.mode {
	case "iptables":
		w.iptables(v.ipt[v6])
	case "nftables":
		w.nftables(v.nft[v6])
	case "ipvs":
		w.ipvs(v.progs[v6])
	}
	pp.Problems = portProblems(d, disc)
	for _, dc := range disc {
		if !discOf(dc, d) {
			continue
		}
		switch dc.Reason {
		case "ServicePortNotProgrammed", "EndpointMissing", "NodePortNotProgrammed", "ExternalIPNotProgrammed", "EndpointsNotProgrammed":
			pp.Hops = append(pp.Hops, Hop{Status: HopMissing, Where: "expected", Rule: dc.Expected, Note: dc.Message})
		}
	}
	return pp
}

// discOf says a difference is about the desired port d.
func discOf(dc Discrepancy, d *DesiredPort) bool {
	if dc.Service.Namespace != d.Name.Namespace || dc.Service.Name != d.Name.Name {
		return false
	}
	return dc.Service.Port == d.Name.Port && (dc.Service.Protocol == "" || dc.Service.Protocol == d.Name.Protocol)
}

// portProblems are the differences about d, and what the API itself says
// is wrong with it.
func portProblems(d *DesiredPort, disc []Discrepancy) []PathProblem {
	var out []PathProblem
	for _, dc := range disc {
		if discOf(dc, d) {
			out = append(out, PathProblem{Reason: dc.Reason, Message: dc.Message, Expected: dc.Expected, Actual: dc.Actual, Fix: fixKubeProxy})
		}
	}
	if !d.HasEndpoints {
		out = append(out, PathProblem{Reason: "NoReadyEndpoints",
			Message: "the API has no ready endpoint for this port anywhere, so connections to it are refused on every node",
			Fix:     fmt.Sprintf(fixNoEndpoints, d.Name.Namespace, d.Name.Name)})
	} else if !d.HasInternalEndpoints() {
		out = append(out, PathProblem{Reason: "NoLocalEndpoints",
			Message: "internalTrafficPolicy is Local and no endpoint is on this node, so ClusterIP connections from here are dropped",
			Fix:     "run a pod of this Service on this node, or set internalTrafficPolicy: Cluster"})
	}
	return out
}

// VerifyService compares one Service's ports with the rules obs holds (the
// shared snapshot's compact view): ExplainService's problems, without the
// rule-by-rule hops.
func VerifyService(obs *Observed, svc *corev1.Service, epSlices []*discoveryv1.EndpointSlice, node *corev1.Node, nodeName string) *ServicePath {
	out := &ServicePath{Service: svc.Namespace + "/" + svc.Name, Node: nodeName, Mode: obs.Mode, Backend: obs.Backend}
	desired := DesiredServicePortsOn([]*corev1.Service{svc}, epSlices, NodeTopologyOf(nodeName, node))
	for _, v6 := range []bool{false, true} {
		p := obs.Progs[v6]
		var fam []DesiredPort
		for _, dp := range desired {
			if dp.IPv6 == v6 {
				fam = append(fam, dp)
			}
		}
		if p == nil {
			for i := range fam {
				out.Ports = append(out.Ports, PortPath{Port: fam[i].Name.String(), Protocol: strings.ToUpper(fam[i].Name.Protocol), Family: family(v6), Changed: fam[i].Changed,
					Problems: []PathProblem{{Reason: "FamilyNotProgrammed", Message: "kube-proxy has no " + family(v6) + " rules on this node", Fix: fixKubeProxy}}})
			}
			continue
		}
		disc, _, _ := Compare(fam, p)
		if obs.Mode == "ipvs" {
			disc, _ = CompareIPVSNode(fam, v6, obs.IPVS, node, disc, 0)
		}
		for i := range fam {
			d := &fam[i]
			out.Ports = append(out.Ports, PortPath{Port: d.Name.String(), Protocol: strings.ToUpper(d.Name.Protocol), Family: family(v6), ClusterIP: d.ClusterIP,
				ServicePort: d.Port, Changed: d.Changed, Problems: portProblems(d, disc)})
		}
	}
	slices.SortStableFunc(out.Ports, func(a, b PortPath) int {
		return strings.Compare(a.Family+a.Port+a.Protocol, b.Family+b.Port+b.Protocol)
	})
	return out
}

type walker struct {
	d         *DesiredPort
	pp        *PortPath
	ch        ExpectedChains
	wanted    map[string]bool // chains the port must have
	endpoints map[string]bool // "ip:port" it may DNAT to
	seen      map[string]bool
	queue     []string
	// reached holds the chains some rule or map element sends packets to.
	reached map[string]bool
}

func (w *walker) hop(status, where, rule, note string) {
	w.pp.Hops = append(w.pp.Hops, Hop{Status: status, Where: where, Rule: rule, Note: note})
}

// reach follows a chain a rule sends packets to.
func (w *walker) reach(chain string) {
	w.reached[chain] = true
	w.follow(chain)
}

// unreached notes the hops of per-service chains nothing sends packets to.
func (w *walker) unreached(prefix string) {
	for i := range w.pp.Hops {
		h := &w.pp.Hops[i]
		chain, ok := strings.CutPrefix(h.Where, prefix)
		if !ok || w.reached[chain] || !(isIPTServiceChain(chain) || strings.Contains(chain, "/")) {
			continue
		}
		if h.Note != "" {
			h.Note += "; "
		}
		h.Note += "nothing jumps to this chain"
	}
}

func (w *walker) follow(chain string) {
	if chain != "" && !w.seen[chain] {
		w.seen[chain] = true
		w.queue = append(w.queue, chain)
	}
}

// entryStatus judges a rule that sends dst (the ClusterIP, an external IP
// or the NodePort) to target.
func (w *walker) entryStatus(target string, clusterIP bool) (string, string) {
	if !w.d.HasEndpoints {
		return HopStale, "the API has no endpoints: kube-proxy should reject this, not forward it"
	}
	if target == w.ch.Internal || (!clusterIP && target == w.ch.External) {
		return HopOK, ""
	}
	want := w.ch.Internal
	if !clusterIP {
		want = w.ch.External
	}
	return HopWrong, "should go to " + want
}

func (w *walker) iptables(r *iptRules) {
	if r == nil {
		return
	}
	d := w.d
	port := strconv.Itoa(int(d.Port))
	proto := strings.ToLower(d.Name.Protocol)
	external := map[string]bool{}
	for _, ip := range d.ExternalIPs {
		external[ip] = true
	}
	matches := func(x dataplane.IPTRule, dst string) bool {
		return stripHostMask(x.Dest) == dst && x.DPort == port && strings.ToLower(x.Proto) == proto
	}
	for _, x := range r.nat["KUBE-SERVICES"] {
		switch {
		case matches(x, d.ClusterIP):
			st, note := w.entryStatus(x.Target, true)
			w.hop(st, "nat KUBE-SERVICES", x.Line, note)
			w.reach(x.Target)
		case external[stripHostMask(x.Dest)] && x.DPort == port && strings.ToLower(x.Proto) == proto:
			st, note := w.entryStatus(x.Target, false)
			w.hop(st, "nat KUBE-SERVICES", x.Line, note)
			w.reach(x.Target)
		}
	}
	if d.NodePort > 0 {
		np := strconv.Itoa(int(d.NodePort))
		for _, x := range r.nat["KUBE-NODEPORTS"] {
			if x.DPort == np && strings.ToLower(x.Proto) == proto {
				st, note := w.entryStatus(x.Target, false)
				w.hop(st, "nat KUBE-NODEPORTS", x.Line, note)
				w.reach(x.Target)
			}
		}
	}
	for _, chain := range []string{"KUBE-SERVICES", "KUBE-EXTERNAL-SERVICES", "KUBE-NODEPORTS"} {
		for _, x := range r.filter[chain] {
			if !(matches(x, d.ClusterIP) || external[stripHostMask(x.Dest)] || (chain == "KUBE-NODEPORTS" && x.DPort == strconv.Itoa(int(d.NodePort)))) {
				continue
			}
			if x.Target != "REJECT" && x.Target != "DROP" {
				continue
			}
			st, note := HopOK, "no endpoints: rejected, as kube-proxy does"
			if d.HasInternalEndpoints() {
				st, note = HopWrong, fmt.Sprintf("the API has %d endpoints but this node rejects the port", len(d.InternalEndpoints()))
			}
			w.hop(st, "filter "+chain, x.Line, note)
		}
	}
	// The service's own chains, reached or not (stale ones too).
	var own []string
	for chain, rules := range r.nat {
		if isIPTServiceChain(chain) && w.ownsIPT(chain, rules) {
			own = append(own, chain)
		}
	}
	// Service chains before endpoint chains, each in name order.
	slices.SortFunc(own, func(a, b string) int {
		if sa, sb := strings.HasPrefix(a, "KUBE-SEP-"), strings.HasPrefix(b, "KUBE-SEP-"); sa != sb {
			if sa {
				return 1
			}
			return -1
		}
		return strings.Compare(a, b)
	})
	for _, chain := range own {
		w.follow(chain)
	}
	for i := 0; i < len(w.queue); i++ {
		chain := w.queue[i]
		rules, ok := r.nat[chain]
		if !ok {
			if isIPTServiceChain(chain) {
				w.hop(HopMissing, "nat "+chain, "(no such chain)", "a rule jumps to a chain that does not exist")
			}
			continue
		}
		chainStale := isIPTServiceChain(chain) && !w.wanted[chain]
		for _, x := range rules {
			st, note := HopOK, ""
			switch {
			case chainStale:
				st, note = HopStale, "chain "+chain+" is not one this port has in the API"
			case x.ToDest != "":
				note = "DNAT to " + x.ToDest
				if !w.endpoints[x.ToDest] {
					st, note = HopStale, "DNAT to "+x.ToDest+", not an endpoint in the API"
				}
			case strings.HasPrefix(x.Target, "KUBE-SEP-"):
				if p := iptProbability(x.Line); p != "" {
					note = "probability " + p
				}
				if !w.wanted[x.Target] {
					st, note = HopStale, strings.TrimSpace(note+" to an endpoint the API no longer has")
				}
			}
			w.hop(st, "nat "+chain, x.Line, note)
			if isIPTServiceChain(x.Target) {
				w.reach(x.Target)
			}
		}
	}
	w.unreached("nat ")
}

// ownsIPT says a per-service chain belongs to this port: by name, or by the
// port its rules' comments name.
func (w *walker) ownsIPT(chain string, rules []dataplane.IPTRule) bool {
	if w.wanted[chain] {
		return true
	}
	c := IPTablesChainsFor(w.d.Name)
	if chain == c.SVC || chain == c.SVL || chain == c.EXT || chain == c.FW {
		return true
	}
	for _, x := range rules {
		if commentOwner(x.Comment) == w.d.Name.String() {
			return true
		}
	}
	return false
}

// iptProbability is the --probability of a statistic match.
func iptProbability(line string) string {
	_, rest, ok := strings.Cut(line, "--probability ")
	if !ok {
		return ""
	}
	v, _, _ := strings.Cut(rest, " ")
	if f, err := strconv.ParseFloat(v, 64); err == nil {
		return strconv.FormatFloat(f, 'f', -1, 64)
	}
	return v
}

func (w *walker) nftables(t *dataplane.NFTTable) {
	if t == nil {
		return
	}
	d := w.d
	port := strconv.Itoa(int(d.Port))
	proto := strings.ToLower(d.Name.Protocol)
	external := map[string]bool{}
	for _, ip := range d.ExternalIPs {
		external[ip] = true
	}
	elem := func(e dataplane.NFTElement) string {
		s := strings.Join(e.Key, " . ") + " : " + e.Verdict
		if e.Target != "" {
			s += " " + e.Target
		}
		return s
	}
	// The services chain asks cluster-ips first (masquerade from outside
	// the pod network), and cluster-ips-check rejects undefined ports of
	// the IPs it holds.
	if st := t.Sets["cluster-ips"]; st != nil {
		in := slices.ContainsFunc(st.Elements, func(e dataplane.NFTElement) bool { return len(e.Key) == 1 && e.Key[0] == d.ClusterIP })
		if in {
			w.hop(HopOK, "set cluster-ips", d.ClusterIP, "the ClusterIP is in kube-proxy's active ClusterIPs")
		} else {
			w.hop(HopMissing, "set cluster-ips", "(no element "+d.ClusterIP+")", "not masqueraded from outside the pod network; undefined ports dropped instead of rejected")
		}
	}
	for _, name := range []string{"service-ips", "no-endpoint-services"} {
		m := t.Maps[name]
		if m == nil {
			continue
		}
		for _, e := range m.Elements {
			if len(e.Key) != 3 || e.Key[2] != port || strings.ToLower(e.Key[1]) != proto {
				continue
			}
			isCIP := e.Key[0] == d.ClusterIP
			if !isCIP && !external[e.Key[0]] {
				continue
			}
			if name == "no-endpoint-services" {
				st, note := HopOK, "no endpoints: rejected, as kube-proxy does"
				if d.HasInternalEndpoints() {
					st, note = HopWrong, fmt.Sprintf("the API has %d endpoints but this node rejects the port", len(d.InternalEndpoints()))
				}
				w.hop(st, "map "+name, elem(e), note)
				continue
			}
			st, note := w.entryStatus(e.Target, isCIP)
			w.hop(st, "map "+name, elem(e), note)
			w.reach(e.Target)
		}
	}
	if m := t.Maps["service-nodeports"]; m != nil && d.NodePort > 0 {
		for _, e := range m.Elements {
			if len(e.Key) == 2 && strings.ToLower(e.Key[0]) == proto && e.Key[1] == strconv.Itoa(int(d.NodePort)) {
				st, note := w.entryStatus(e.Target, false)
				w.hop(st, "map service-nodeports", elem(e), note)
				w.reach(e.Target)
			}
		}
	}
	names := make([]string, 0, len(t.Chains))
	for name := range t.Chains {
		names = append(names, name)
	}
	slices.Sort(names)
	for _, name := range names {
		if strings.Contains(name, "/") && w.ownsNFT(name) {
			w.follow(name)
		}
	}
	for i := 0; i < len(w.queue); i++ {
		name := w.queue[i]
		c := t.Chains[name]
		if c == nil {
			w.hop(HopMissing, "chain "+name, "(no such chain)", "a map element goes to a chain that does not exist")
			continue
		}
		stale := !w.wanted[name] && !strings.HasPrefix(name, "endpoint-")
		for _, j := range c.Jumps {
			st, note := HopOK, ""
			if stale {
				st, note = HopStale, "chain "+name+" is not one this port has in the API"
			}
			if strings.HasPrefix(j, "endpoint-") && !w.endpointChain(j) {
				st, note = HopStale, "to an endpoint the API no longer has"
			}
			w.hop(st, "chain "+name, "jump "+j, note)
			w.reach(j)
		}
		for _, dst := range c.DNAT {
			st, note := HopOK, "DNAT to "+dst
			if !w.endpoints[dst] {
				st, note = HopStale, "DNAT to "+dst+", not an endpoint in the API"
			}
			w.hop(st, "chain "+name, "dnat to "+dst, note)
		}
	}
	w.unreached("chain ")
}

// ownsNFT says an nftables chain is this port's (same namespace, name,
// protocol and port in its name).
func (w *walker) ownsNFT(chain string) bool {
	c := NFTablesChainsFor(w.d.Name)
	for _, n := range []string{c.Service, c.Local, c.External, c.Firewall} {
		if chain == n {
			return true
		}
	}
	if !strings.HasPrefix(chain, "endpoint-") {
		return false
	}
	suffix := "/" + w.d.Name.Protocol + "/" + w.d.Name.Port + "__"
	return nftChainOwner(chain) == w.d.Name.String() && strings.Contains(chain, w.d.Name.Namespace+"/"+w.d.Name.Name+suffix)
}

func (w *walker) endpointChain(chain string) bool {
	for e := range w.endpoints {
		if NFTablesEndpointChain(w.d.Name, e) == chain {
			return true
		}
	}
	return false
}

func (w *walker) ipvs(p *Programmed) {
	if p == nil {
		return
	}
	d := w.d
	keys := []string{svcKey(d.ClusterIP, d.Name.Protocol, strconv.Itoa(int(d.Port)))}
	for _, ip := range d.ExternalIPs {
		keys = append(keys, svcKey(ip, d.Name.Protocol, strconv.Itoa(int(d.Port))))
	}
	for i, k := range keys {
		chain, ok := p.Services[k]
		if !ok {
			continue
		}
		ip, rest, _ := strings.Cut(k, "/")
		vs := net.JoinHostPort(ip, rest[strings.LastIndexByte(rest, '/')+1:]) + "/" + strings.ToUpper(d.Name.Protocol)
		note := ""
		if !d.HasEndpoints {
			note = "the API has no endpoints"
		}
		w.hop(HopOK, "ipvs", "virtual server "+vs, note)
		for _, e := range p.Endpoints[chain] {
			st, note := HopOK, ""
			if i == 0 && !slices.Contains(d.InternalEndpoints(), e) || i > 0 && !w.endpoints[e] {
				st, note = HopStale, "not an endpoint in the API"
			}
			w.hop(st, "ipvs "+vs, "real server "+e, note)
		}
	}
}
