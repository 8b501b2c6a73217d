// Package explain renders 'node-doctor explain': one Service's path or one
// pod on this node, for a person or a script.
package explain

import (
	"encoding/json"
	"fmt"
	"io"
	"strings"
	"text/tabwriter"
	"time"

	"sigs.k8s.io/yaml"

	"github.com/node-doctor/node-doctor/pkg/check"
	"github.com/node-doctor/node-doctor/pkg/cri"
	"github.com/node-doctor/node-doctor/pkg/kubeproxy"
	"github.com/node-doctor/node-doctor/pkg/report"
)

// WriteJSON writes an explanation as indented JSON.
func WriteJSON(w io.Writer, v any) error {
	enc := json.NewEncoder(w)
	enc.SetIndent("", "  ")
	return enc.Encode(v)
}

// WriteYAML writes an explanation as YAML with its JSON field names.
func WriteYAML(w io.Writer, v any) error {
	b, err := yaml.Marshal(v)
	if err != nil {
		return err
	}
	_, err = w.Write(b)
	return err
}

var hopStatus = map[string]check.Status{
	kubeproxy.HopOK:      check.StatusOK,
	kubeproxy.HopMissing: check.StatusProblem,
	kubeproxy.HopStale:   check.StatusProblem,
	kubeproxy.HopWrong:   check.StatusProblem,
}

// WriteServicePath writes one Service's path on this node, hop by hop, as a
// person reads `iptables-save | grep` with the answers written in.
func WriteServicePath(w io.Writer, p *kubeproxy.ServicePath, color bool) error {
	mode := p.Mode + " mode"
	if p.Backend != "" {
		mode += ", iptables-" + p.Backend + " backend"
	}
	fmt.Fprintf(w, "Service %s on node %s (kube-proxy in %s)\n", p.Service, p.Node, mode)
	for _, n := range p.Notes {
		fmt.Fprintf(w, "  note: %s\n", n)
	}
	label := func(s string) string {
		st, ok := hopStatus[s]
		if !ok {
			st = check.StatusWarning
		}
		l := "ok"
		if s != kubeproxy.HopOK {
			l = strings.ToUpper(s)
		}
		return report.Colored(st, l, color)
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
			fmt.Fprintf(w, "  %s %s: %s", report.Label(check.StatusProblem, color), pr.Reason, pr.Message)
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

// WritePod writes one pod as the runtime has it, with the findings about it.
func WritePod(w io.Writer, p *cri.PodExplanation, color bool) error {
	fmt.Fprintf(w, "Pod %s on node %s (runtime %s)\n", p.Pod, orDash(p.Node), p.Endpoint)
	for i, sb := range p.Sandboxes {
		what := "sandbox"
		if i > 0 {
			what = "older sandbox"
		}
		fmt.Fprintf(w, "\n%s %s  %s  attempt %d  created %s", what, shortID(sb.ID), sb.State, sb.Attempt, sb.Created.Format(time.RFC3339))
		if sb.IP != "" {
			fmt.Fprintf(w, "  IP %s", sb.IP)
		}
		fmt.Fprintln(w)
		if sb.DNS != nil {
			fmt.Fprintf(w, "  dns: nameserver %s; search %s; options %s\n", orDash(strings.Join(sb.DNS.Servers, " ")),
				orDash(strings.Join(sb.DNS.Searches, " ")), orDash(strings.Join(sb.DNS.Options, " ")))
		}
		if sb.Problem != "" {
			fmt.Fprintf(w, "  (%s)\n", sb.Problem)
		}
		tw := tabwriter.NewWriter(w, 0, 0, 2, ' ', 0)
		fmt.Fprintln(tw, "  CONTAINER\tID\tSTATE\tATTEMPT\tEXIT\tREASON\tFINISHED")
		for _, c := range sb.Containers {
			exit, fin := "-", "-"
			if c.State == "EXITED" {
				exit = fmt.Sprint(c.ExitCode)
			}
			if !c.Finished.IsZero() {
				fin = c.Finished.Format(time.RFC3339)
			}
			reason := orDash(c.Reason)
			if c.OOMKilled {
				reason = report.Colored(check.StatusProblem, reason, color)
			}
			fmt.Fprintf(tw, "  %s\t%s\t%s\t%d\t%s\t%s\t%s\n", c.Name, shortID(c.ID), c.State, c.Attempt, exit, reason, fin)
		}
		if err := tw.Flush(); err != nil {
			return err
		}
		for _, c := range sb.Containers {
			if c.LastLines == "" && c.LogProblem == "" {
				continue
			}
			fmt.Fprintf(w, "  last lines of %s (attempt %d):\n", c.Name, c.Attempt)
			if c.LogProblem != "" {
				fmt.Fprintf(w, "    (%s)\n", c.LogProblem)
			}
			for _, l := range strings.Split(strings.TrimRight(c.LastLines, "\n"), "\n") {
				if l != "" {
					fmt.Fprintf(w, "    | %s\n", l)
				}
			}
		}
	}
	fmt.Fprintln(w)
	if len(p.Findings) == 0 {
		fmt.Fprintln(w, "no finding about this pod")
	} else {
		fmt.Fprintln(w, "FINDINGS")
		tw := tabwriter.NewWriter(w, 0, 0, 2, ' ', 0)
		fmt.Fprintln(tw, "  STATUS\tCHECK\tREASON\tMESSAGE")
		for _, f := range p.Findings {
			l := report.Label(report.FindingStatus(f.Severity), color)
			fmt.Fprintf(tw, "  %s\t%s\t%s\t%s\n", l, f.Check, f.Reason, report.OneLine(f.Message))
		}
		if err := tw.Flush(); err != nil {
			return err
		}
	}
	if p.Broken() {
		fmt.Fprintf(w, "\n%s: needs attention on this node\n", p.Pod)
	} else {
		fmt.Fprintf(w, "\n%s: running, nothing found\n", p.Pod)
	}
	return nil
}

func orDash(s string) string {
	if s == "" {
		return "-"
	}
	return s
}

func shortID(id string) string {
	if len(id) > 13 {
		return id[:13]
	}
	return id
}
