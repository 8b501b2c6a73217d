// Package report renders check results for a person at a terminal (a table
// grouped by area) or for scripts (JSON, YAML).
package report

import (
	"encoding/json"
	"fmt"
	"io"
	"strings"
	"text/tabwriter"
	"time"

	"go.yaml.in/yaml/v3"

	"github.com/node-doctor/node-doctor/pkg/check"
)

// Summary counts checks by status.
type Summary struct {
	OK            int `json:"ok" yaml:"ok"`
	Warning       int `json:"warning" yaml:"warning"`
	Problem       int `json:"problem" yaml:"problem"`
	Error         int `json:"error" yaml:"error"`
	NotApplicable int `json:"not_applicable" yaml:"not_applicable"`
}

// Report is one run of node-doctor check.
type Report struct {
	Node    string         `json:"node" yaml:"node"`
	Time    time.Time      `json:"time" yaml:"time"`
	Version string         `json:"version" yaml:"version"`
	Summary Summary        `json:"summary" yaml:"summary"`
	Results []check.Result `json:"results" yaml:"results"`
	// Services is present when a data-plane check ran (see ServicesSection).
	Services *Services `json:"services,omitempty" yaml:"services,omitempty"`
}

// New builds a report and its summary.
func New(node, version string, at time.Time, results []check.Result) Report {
	r := Report{Node: node, Version: version, Time: at.UTC(), Results: results}
	if r.Results == nil {
		r.Results = []check.Result{}
	}
	for _, res := range results {
		switch res.Status {
		case check.StatusOK:
			r.Summary.OK++
		case check.StatusWarning:
			r.Summary.Warning++
		case check.StatusProblem:
			r.Summary.Problem++
		case check.StatusError:
			r.Summary.Error++
		case check.StatusNotApplicable:
			r.Summary.NotApplicable++
		}
	}
	return r
}

// Healthy is true when no check found a problem or failed to run.
func (r Report) Healthy() bool { return r.Summary.Problem == 0 && r.Summary.Error == 0 }

// WriteJSON writes the report as indented JSON.
func WriteJSON(w io.Writer, r Report) error {
	enc := json.NewEncoder(w)
	enc.SetIndent("", "  ")
	return enc.Encode(r)
}

// WriteYAML writes the report as YAML.
func WriteYAML(w io.Writer, r Report) error {
	enc := yaml.NewEncoder(w)
	enc.SetIndent(2)
	if err := enc.Encode(r); err != nil {
		return err
	}
	return enc.Close()
}

// TableOptions tunes the human report.
type TableOptions struct {
	Color bool
	// Verbose shows every finding, including healthy ones of checks that also
	// found problems, and finding details, and a row for every check of an
	// area that does not apply as a whole (see WriteTable).
	Verbose bool
}

var statusLabel = map[check.Status]string{
	check.StatusOK:            "OK",
	check.StatusWarning:       "WARNING",
	check.StatusProblem:       "PROBLEM",
	check.StatusError:         "ERROR",
	check.StatusNotApplicable: "N/A",
}

// All codes are five bytes so tabwriter columns stay aligned.
var statusColor = map[check.Status]string{
	check.StatusOK:            "\x1b[32m",
	check.StatusWarning:       "\x1b[33m",
	check.StatusProblem:       "\x1b[31m",
	check.StatusError:         "\x1b[35m",
	check.StatusNotApplicable: "\x1b[90m",
}

const colorReset = "\x1b[0m"

// WriteTable writes a table grouped by area, one row per finding. An area
// none of whose checks applies, all for one reason (no container runtime on
// the machine), or none of whose checks could run, all with one error (the
// runtime's socket refuses), is one row unless o.Verbose.
func WriteTable(w io.Writer, r Report, o TableOptions) error {
	fmt.Fprintf(w, "node-doctor %s report for node %s at %s\n", r.Version, r.Node, r.Time.Format(time.RFC3339))
	var areas []string
	byArea := map[string][]check.Result{}
	for _, res := range r.Results {
		if _, ok := byArea[res.Area]; !ok {
			areas = append(areas, res.Area)
		}
		byArea[res.Area] = append(byArea[res.Area], res)
	}
	for _, area := range areas {
		fmt.Fprintf(w, "\n%s\n", strings.ToUpper(area))
		tw := tabwriter.NewWriter(w, 0, 0, 2, ' ', 0)
		fmt.Fprintln(tw, "  STATUS\tCHECK\tREASON\tMESSAGE")
		write := func(name string, rw row) {
			st := statusLabel[rw.status]
			if o.Color {
				st = statusColor[rw.status] + st + colorReset
			}
			fmt.Fprintf(tw, "  %s\t%s\t%s\t%s\n", st, name, rw.reason, rw.message)
		}
		if rw, ok := sameOutcome(byArea[area]); ok && !o.Verbose {
			rw.message += " (--verbose lists each check)"
			write(fmt.Sprintf("%d checks", len(byArea[area])), rw)
		} else {
			for _, res := range byArea[area] {
				for _, rw := range rows(res, o.Verbose) {
					write(res.Check, rw)
				}
			}
		}
		if err := tw.Flush(); err != nil {
			return err
		}
	}
	if r.Services != nil {
		writeServices(w, r.Services, o.Color)
	}
	s := r.Summary
	fmt.Fprintf(w, "\n%d checks: %d ok, %d warning, %d problem, %d error, %d not applicable\n",
		len(r.Results), s.OK, s.Warning, s.Problem, s.Error, s.NotApplicable)
	return nil
}

// sameOutcome returns the one row of an area whose checks, several, are all
// not applicable for one reason or all failed with one error.
func sameOutcome(results []check.Result) (row, bool) {
	if len(results) < 2 {
		return row{}, false
	}
	first := rows(results[0], false)[0]
	if results[0].Status != check.StatusNotApplicable && results[0].Status != check.StatusError {
		return row{}, false
	}
	for _, res := range results[1:] {
		if res.Status != results[0].Status || rows(res, false)[0] != first {
			return row{}, false
		}
	}
	first.message = oneLine(first.message)
	return first, true
}

type row struct {
	status          check.Status
	reason, message string
}

func rows(res check.Result, verbose bool) []row {
	switch res.Status {
	case check.StatusError:
		return []row{{res.Status, "-", "could not run: " + oneLine(res.Err.Error())}}
	case check.StatusNotApplicable:
		return []row{{res.Status, "-", res.NotApplicable}}
	}
	if len(res.Findings) == 0 {
		return []row{{res.Status, "-", "no problems found"}}
	}
	var out []row
	healthyObjects := 0
	for _, f := range res.Findings {
		if !verbose && f.Severity == check.SeverityOK && (res.Status != check.StatusOK || !f.Object.IsNode()) {
			if !f.Object.IsNode() {
				healthyObjects++
			}
			continue
		}
		msg := f.Message
		if f.LogExcerpt != "" {
			msg += "; " + f.LogExcerpt
		}
		if !f.Object.IsNode() {
			msg = f.Object.String() + ": " + msg
		}
		if verbose && len(f.Details) > 0 {
			msg += " " + details(f.Details)
		}
		out = append(out, row{findingStatus(f.Severity), f.Reason, oneLine(msg)})
	}
	if healthyObjects > 0 && res.Status == check.StatusOK {
		out = append(out, row{check.StatusOK, "-", fmt.Sprintf("%d pods and containers listed; --verbose shows them", healthyObjects)})
	}
	return out
}

func findingStatus(s check.Severity) check.Status {
	switch s {
	case check.SeverityProblem:
		return check.StatusProblem
	case check.SeverityWarning:
		return check.StatusWarning
	}
	return check.StatusOK
}

func details(d map[string]string) string {
	b, _ := json.Marshal(d) // sorted keys, never fails for map[string]string
	return string(b)
}

// oneLine keeps a table row on one line whatever a message holds.
func oneLine(s string) string {
	return strings.Join(strings.Fields(s), " ")
}

// Label is a status as the table prints it, coloured when color is set.
func Label(st check.Status, color bool) string {
	l := statusLabel[st]
	if color {
		l = statusColor[st] + l + colorReset
	}
	return l
}

// FindingStatus is the status a finding's severity shows as.
func FindingStatus(s check.Severity) check.Status { return findingStatus(s) }

// OneLine folds a message onto one line.
func OneLine(s string) string { return oneLine(s) }

// Colored colours text as the table colours st, when color is set.
func Colored(st check.Status, text string, color bool) string {
	if !color {
		return text
	}
	return statusColor[st] + text + colorReset
}
