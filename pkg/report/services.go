package report

import (
	"fmt"
	"io"
	"strconv"
	"strings"

	"github.com/node-doctor/node-doctor/pkg/check"
)

// Services is the report's "services" section: how many service ports a
// data-plane check verified on this node, and which are broken and why.
//
// It is built from findings alone, so any check can feed it: a finding whose
// details carry service_ports_verified (and _broken, _pending,
// _no_endpoints, mode) adds counts; a warning or problem about a Service
// (Object.Kind Service) is one broken port, described by its details
// service_port, protocol, ip_family, mode, expected, actual, why and fix.
type Services struct {
	// Note says why nothing was verified (the check did not apply or failed).
	Note   string              `json:"note,omitempty" yaml:"note,omitempty"`
	Counts []ServiceCounts     `json:"counts" yaml:"counts"`
	Broken []BrokenServicePort `json:"broken" yaml:"broken"`
}

// ServiceCounts are one check's service-port counts in one mode.
type ServiceCounts struct {
	Check       string `json:"check" yaml:"check"`
	Mode        string `json:"mode,omitempty" yaml:"mode,omitempty"`
	Verified    int    `json:"verified" yaml:"verified"`
	Broken      int    `json:"broken" yaml:"broken"`
	Pending     int    `json:"pending" yaml:"pending"`
	NoEndpoints int    `json:"no_endpoints" yaml:"no_endpoints"`
}

// BrokenServicePort is one difference on one service port.
type BrokenServicePort struct {
	Check       string         `json:"check" yaml:"check"`
	Severity    check.Severity `json:"severity" yaml:"severity"`
	ServicePort string         `json:"service_port" yaml:"service_port"`
	Protocol    string         `json:"protocol,omitempty" yaml:"protocol,omitempty"`
	IPFamily    string         `json:"ip_family,omitempty" yaml:"ip_family,omitempty"`
	Mode        string         `json:"mode,omitempty" yaml:"mode,omitempty"`
	Reason      string         `json:"reason" yaml:"reason"`
	Why         string         `json:"why" yaml:"why"`
	Expected    string         `json:"expected,omitempty" yaml:"expected,omitempty"`
	Actual      string         `json:"actual,omitempty" yaml:"actual,omitempty"`
	Fix         string         `json:"fix,omitempty" yaml:"fix,omitempty"`
}

// ServicesSection builds the section from results. sources are the checks
// that verify service ports: when none of them produced counts, the section
// says why in one line (not applicable, could not run); when none of them
// ran and nothing else reported about Services, there is no section (nil).
func ServicesSection(results []check.Result, sources ...string) *Services {
	s := &Services{Counts: []ServiceCounts{}, Broken: []BrokenServicePort{}}
	var notes []string
	for _, res := range results {
		for _, f := range res.Findings {
			if v, ok := f.Details["service_ports_verified"]; ok {
				s.Counts = append(s.Counts, ServiceCounts{Check: res.Check, Mode: f.Details["mode"], Verified: atoi(v),
					Broken: atoi(f.Details["service_ports_broken"]), Pending: atoi(f.Details["service_ports_pending"]),
					NoEndpoints: atoi(f.Details["service_ports_no_endpoints"])})
			}
			if f.Severity == check.SeverityOK || f.Object.Kind != check.KindService {
				continue
			}
			b := BrokenServicePort{Check: res.Check, Severity: f.Severity, ServicePort: f.Details["service_port"],
				Protocol: f.Details["protocol"], IPFamily: f.Details["ip_family"], Mode: f.Details["mode"], Reason: f.Reason,
				Why: f.Details["why"], Expected: f.Details["expected"], Actual: f.Details["actual"], Fix: f.Details["fix"]}
			if b.ServicePort == "" {
				b.ServicePort = f.Object.Namespace + "/" + f.Object.Name
			}
			if b.Why == "" {
				b.Why = oneLine(f.Message)
			}
			s.Broken = append(s.Broken, b)
		}
		for _, src := range sources {
			if res.Check != src {
				continue
			}
			switch res.Status {
			case check.StatusNotApplicable:
				notes = append(notes, fmt.Sprintf("not verified (%s): %s", src, res.NotApplicable))
			case check.StatusError:
				notes = append(notes, fmt.Sprintf("not verified (%s could not run): %s", src, oneLine(res.Err.Error())))
			default:
				notes = append(notes, "")
			}
		}
	}
	if len(s.Counts) == 0 && len(s.Broken) == 0 {
		if len(notes) == 0 {
			return nil
		}
		s.Note = strings.Join(notes, "; ")
		if s.Note == "" {
			s.Note = "no service port counts reported"
		}
	}
	return s
}

func atoi(s string) int {
	n, _ := strconv.Atoi(s)
	return n
}

// writeServices renders the section like a precise `iptables-save | grep`:
// per broken port, the rule expected and the rule found.
func writeServices(w io.Writer, s *Services, color bool) {
	fmt.Fprintf(w, "\nSERVICES\n")
	if s.Note != "" {
		fmt.Fprintf(w, "  %s\n", s.Note)
		return
	}
	for _, c := range s.Counts {
		mode := c.Mode
		if mode == "" {
			mode = c.Check
		}
		fmt.Fprintf(w, "  %s: %d service ports verified, %d broken, %d pending (kube-proxy still syncing), %d with no endpoints anywhere\n",
			mode, c.Verified, c.Broken, c.Pending, c.NoEndpoints)
	}
	for _, b := range s.Broken {
		st := statusLabel[findingStatus(b.Severity)]
		if color {
			st = statusColor[findingStatus(b.Severity)] + st + colorReset
		}
		var what []string
		for _, x := range []string{b.Protocol, b.IPFamily, b.Mode} {
			if x != "" {
				what = append(what, x)
			}
		}
		port := b.ServicePort
		if len(what) > 0 {
			port += " (" + strings.Join(what, ", ") + ")"
		}
		fmt.Fprintf(w, "  %s %s %s: %s\n", st, port, b.Reason, b.Why)
		for _, kv := range [][2]string{{"expected", b.Expected}, {"actual", b.Actual}, {"fix", b.Fix}} {
			if kv[1] != "" {
				fmt.Fprintf(w, "      %-9s %s\n", kv[0]+":", oneLine(kv[1]))
			}
		}
	}
}
