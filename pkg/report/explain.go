package report

import (
	"encoding/json"
	"fmt"
	"io"
	"strings"
	"text/tabwriter"

	"sigs.k8s.io/yaml"

	"github.com/node-doctor/node-doctor/pkg/check"
	"github.com/node-doctor/node-doctor/pkg/netcheck"
)

// WriteValueJSON writes any explanation as indented JSON.
func WriteValueJSON(w io.Writer, v any) error {
	enc := json.NewEncoder(w)
	enc.SetIndent("", "  ")
	return enc.Encode(v)
}

// WriteValueYAML writes any explanation as YAML with its JSON field names.
func WriteValueYAML(w io.Writer, v any) error {
	b, err := yaml.Marshal(v)
	if err != nil {
		return err
	}
	_, err = w.Write(b)
	return err
}

var hopStatus = map[string]check.Status{
	netcheck.HopOK:      check.StatusOK,
	netcheck.HopMissing: check.StatusProblem,
	netcheck.HopStale:   check.StatusProblem,
	netcheck.HopWrong:   check.StatusProblem,
}

// WriteServicePath writes one Service's path on this node, hop by hop, as a
// person reads `iptables-save | grep` with the answers written in.
func WriteServicePath(w io.Writer, p *netcheck.ServicePath, color bool) error {
	mode := p.Mode
	if p.Backend != "" {
		mode += ", " + p.Backend + " backend"
	}
	fmt.Fprintf(w, "Service %s on node %s (kube-proxy %s mode)\n", p.Service, p.Node, mode)
	for _, n := range p.Notes {
		fmt.Fprintf(w, "  note: %s\n", n)
	}
	label := func(s string) string {
		st, ok := hopStatus[s]
		if !ok {
			st = check.StatusWarning
		}
		l := strings.ToLower(statusLabel[st])
		if s != netcheck.HopOK {
			l = strings.ToUpper(s)
		}
		if color {
			return statusColor[st] + l + colorReset
		}
		return l
	}
	for _, pp := range p.Ports {
		fmt.Fprintf(w, "\n%s %s %s (%s)", pp.Port, pp.Protocol, joinHostPort(pp.ClusterIP, pp.ServicePort), pp.Family)
		if pp.NodePort > 0 {
			fmt.Fprintf(w, ", NodePort %d", pp.NodePort)
		}
		if len(pp.ExternalIPs) > 0 {
			fmt.Fprintf(w, ", external %s", strings.Join(pp.ExternalIPs, ", "))
		}
		eps := "none"
		if len(pp.Endpoints) > 0 {
			eps = strings.Join(pp.Endpoints, ", ")
		}
		fmt.Fprintf(w, "\n  endpoints in the API: %s", eps)
		if pp.Topology != "" {
			fmt.Fprintf(w, " (%s)", pp.Topology)
		}
		fmt.Fprintln(w)
		tw := tabwriter.NewWriter(w, 0, 0, 2, ' ', 0)
		fmt.Fprintln(tw, "  STATUS\tWHERE\tRULE")
		for _, h := range pp.Hops {
			rule := h.Rule
			if h.Note != "" {
				rule += "   # " + h.Note
			}
			fmt.Fprintf(tw, "  %s\t%s\t%s\n", label(h.Status), h.Where, rule)
		}
		if len(pp.Hops) == 0 {
			fmt.Fprintln(tw, "  -\t-\tno rule on this node for this port")
		}
		if err := tw.Flush(); err != nil {
			return err
		}
		for _, pr := range pp.Problems {
			fmt.Fprintf(w, "  %s %s: %s", label(netcheck.HopWrong), pr.Reason, pr.Message)
			if pr.Expected != "" || pr.Actual != "" {
				fmt.Fprintf(w, "; expected %s, found %s", orNone(pr.Expected), orNone(pr.Actual))
			}
			fmt.Fprintf(w, "\n    fix: %s\n", pr.Fix)
		}
	}
	if p.Broken() {
		n := 0
		for _, pp := range p.Ports {
			n += len(pp.Problems)
		}
		fmt.Fprintf(w, "\n%s: BROKEN on this node (%d problems)\n", p.Service, n)
	} else {
		fmt.Fprintf(w, "\n%s: every hop matches the API on this node\n", p.Service)
	}
	return nil
}

func joinHostPort(ip string, port int32) string {
	if strings.Contains(ip, ":") {
		return fmt.Sprintf("[%s]:%d", ip, port)
	}
	return fmt.Sprintf("%s:%d", ip, port)
}

func orNone(s string) string {
	if s == "" {
		return "nothing"
	}
	return s
}
