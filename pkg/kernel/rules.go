package kernel

import (
	"bytes"
	"encoding/json"
	"errors"
	"fmt"
	"os"
	"path"
	"path/filepath"
	"regexp"
	"strings"
	"time"

	"go.yaml.in/yaml/v3"

	"github.com/node-doctor/node-doctor/pkg/check"
)

// Defaults for what a rule file leaves out, as node-problem-detector has them.
const (
	DefaultLookback   = 5 * time.Minute
	DefaultBufferSize = 10
	maxBufferSize     = 1000
	maxCount          = 10000
)

// Plugins (log sources) a rule file can name.
const (
	PluginKmsg    = "kmsg"
	PluginFilelog = "filelog"
	// PluginJournald reads systemd-journald's files. NPD's source "kernel"
	// (SYSLOG_IDENTIFIER=kernel) reads /dev/kmsg instead, which the
	// journal's kernel lines are copies of: see docs/kernel.md.
	PluginJournald = "journald"
)

// ruleFile is a rule file as written: node-problem-detector's
// system-log-monitor fields, plus node-doctor's extras (skip, and per rule
// message, severity, recovery, quietPeriod, count, window, skip).
type ruleFile struct {
	Plugin           string          `json:"plugin" yaml:"plugin"`
	PluginConfig     *pluginConfig   `json:"pluginConfig" yaml:"pluginConfig"`
	LogPath          string          `json:"logPath" yaml:"logPath"`
	Lookback         string          `json:"lookback" yaml:"lookback"`
	BufferSize       int             `json:"bufferSize" yaml:"bufferSize"`
	Source           string          `json:"source" yaml:"source"`
	MetricsReporting *bool           `json:"metricsReporting" yaml:"metricsReporting"`
	Conditions       []conditionSpec `json:"conditions" yaml:"conditions"`
	Rules            []ruleSpec      `json:"rules" yaml:"rules"`
	Skip             []string        `json:"skip" yaml:"skip"`
	// SkipList (NPD) drops lines containing any of these strings.
	SkipList []string `json:"skipList" yaml:"skipList"`
	// Delay (NPD) ignores what is logged this long after boot.
	Delay string `json:"delay" yaml:"delay"`
}

type pluginConfig struct {
	Timestamp       string `json:"timestamp" yaml:"timestamp"`
	Message         string `json:"message" yaml:"message"`
	TimestampFormat string `json:"timestampFormat" yaml:"timestampFormat"`
	// Source is journald's SYSLOG_IDENTIFIER filter (NPD).
	Source string `json:"source" yaml:"source"`
	// Identifiers and Units select journal entries by SYSLOG_IDENTIFIER and
	// by systemd unit (node-doctor).
	Identifiers []string `json:"identifiers" yaml:"identifiers"`
	Units       []string `json:"units" yaml:"units"`
}

type conditionSpec struct {
	Type    string `json:"type" yaml:"type"`
	Reason  string `json:"reason" yaml:"reason"`
	Message string `json:"message" yaml:"message"`
}

type ruleSpec struct {
	Type                          string `json:"type" yaml:"type"`
	Condition                     string `json:"condition" yaml:"condition"`
	Reason                        string `json:"reason" yaml:"reason"`
	Pattern                       string `json:"pattern" yaml:"pattern"`
	PatternGeneratedMessageSuffix string `json:"patternGeneratedMessageSuffix" yaml:"patternGeneratedMessageSuffix"`

	Message     string   `json:"message" yaml:"message"`
	Severity    string   `json:"severity" yaml:"severity"`
	Recovery    string   `json:"recovery" yaml:"recovery"`
	QuietPeriod string   `json:"quietPeriod" yaml:"quietPeriod"`
	Count       int      `json:"count" yaml:"count"`
	Window      string   `json:"window" yaml:"window"`
	Skip        []string `json:"skip" yaml:"skip"`
}

// RuleSet is one compiled rule file: where to read and what to look for.
type RuleSet struct {
	// File names where the rules came from, for messages.
	File string
	// Name is the file's "source" (e.g. kernel-monitor).
	Name string
	// Plugin is PluginKmsg, PluginFilelog or PluginJournald.
	Plugin string
	// LogPath is relative to the host root, e.g. dev/kmsg; for journald a
	// journal directory, or empty for both of DefaultJournalDirs.
	LogPath string
	// Identifiers and Units filter journal entries (journald only).
	Identifiers []string
	Units       []string
	// Parse splits file lines (filelog only).
	Parse      LineParser
	Lookback   time.Duration
	BufferSize int
	Conditions []Condition
	Rules      []*Rule
	// Skip drops lines before any rule sees them.
	Skip []*regexp.Regexp
	// SkipList drops lines containing any of these strings before they
	// reach the rules, as NPD's skipList does (for files, on the whole line).
	SkipList [][]byte
	// Delay: lines logged less than this after boot are ignored (NPD).
	Delay time.Duration
	// Label names the log in findings' messages ("kernel log", "journal",
	// or the file for a log that is not the kernel's).
	Label string
}

// Condition is a node condition a rule file drives, with its healthy state.
type Condition struct {
	Type    string
	Reason  string
	Message string
}

// Rule is one compiled rule.
type Rule struct {
	// Index is the rule's position in its file, from 0.
	Index     int
	Permanent bool
	Condition string
	Reason    string
	Pattern   string
	// Message is a template for the finding's message; $name and ${name}
	// expand to the pattern's named groups.
	Message       string
	MessageSuffix string
	Severity      check.Severity
	Recovery      *regexp.Regexp
	QuietPeriod   time.Duration
	// Count matches within Window make the rule fire; 0 or 1 fires on each.
	Count  int
	Window time.Duration
	Skip   []*regexp.Regexp

	re *regexp.Regexp
	// multiLine rules are matched against the last BufferSize lines joined
	// by newlines and must end at the newest line, as in NPD.
	multiLine bool
	// spanLines is how many lines a multi-line match can cover; 0 if
	// unbounded.
	spanLines int
}

// LoadRuleFile reads and compiles a rule file from the agent's filesystem:
// a .json file is node-problem-detector's system-log-monitor format, any
// other is node-doctor's YAML form.
func LoadRuleFile(file string) (*RuleSet, error) {
	b, err := os.ReadFile(file)
	if err != nil {
		return nil, fmt.Errorf("rule file: %w", err)
	}
	return ParseRules(file, b)
}

// RefusedError says an NPD config file is of a kind node-doctor does not
// run, and why, in NPD's terms.
type RefusedError struct{ File, Why string }

func (e *RefusedError) Error() string { return "rule file " + e.File + ": refused: " + e.Why }

// ParseRules compiles the rule file data; name decides the format by its
// extension and is used in errors. Every problem is reported, each naming
// the file, the rule and why.
func ParseRules(name string, data []byte) (*RuleSet, error) {
	var f ruleFile
	npd := strings.EqualFold(filepath.Ext(name), ".json")
	if npd {
		if why := npdRefusal(data); why != "" {
			return nil, &RefusedError{File: name, Why: why}
		}
		d := json.NewDecoder(bytes.NewReader(data))
		d.DisallowUnknownFields()
		if err := d.Decode(&f); err != nil {
			return nil, fmt.Errorf("rule file %s: %w", name, NPDDecodeError(data, err, "system-log-monitor"))
		}
		if d.More() {
			return nil, fmt.Errorf("rule file %s: data after the JSON object", name)
		}
	} else {
		d := yaml.NewDecoder(bytes.NewReader(data))
		d.KnownFields(true)
		if err := d.Decode(&f); err != nil {
			return nil, fmt.Errorf("rule file %s: %w", name, err)
		}
	}
	set, errs := compile(name, &f, npd)
	if len(errs) > 0 {
		return nil, fmt.Errorf("rule file %s: %w", name, errors.Join(errs...))
	}
	return set, nil
}

func compile(name string, f *ruleFile, npd bool) (*RuleSet, []error) {
	var errs []error
	fail := func(format string, args ...any) { errs = append(errs, fmt.Errorf(format, args...)) }
	set := &RuleSet{File: name, Name: f.Source, Plugin: f.Plugin, BufferSize: f.BufferSize, Lookback: DefaultLookback}
	if set.Name == "" {
		set.Name = strings.TrimSuffix(path.Base(filepath.ToSlash(name)), path.Ext(name))
	}

	switch f.Plugin {
	case "", PluginKmsg:
		set.Plugin, set.LogPath = PluginKmsg, DefaultKmsgPath
		if f.LogPath != "" {
			set.LogPath = hostPath(f.LogPath)
		}
	case PluginFilelog:
		if f.LogPath == "" {
			fail("logPath: required for plugin filelog")
		}
		set.LogPath = hostPath(f.LogPath)
		set.Parse = ParseSyslogKernelLine
		if pc := f.PluginConfig; pc != nil && (pc.Timestamp != "" || pc.Message != "" || pc.TimestampFormat != "") {
			p, err := npdLineParser(pc)
			if err != nil {
				fail("pluginConfig: %w", err)
			}
			set.Parse = p
			set.Label = "log " + f.LogPath
		}
	case PluginJournald:
		compileJournald(set, f, fail)
	default:
		fail("plugin %q: want kmsg, filelog or journald", f.Plugin)
	}
	if pc := f.PluginConfig; pc != nil && f.Plugin != PluginJournald && (len(pc.Identifiers) > 0 || len(pc.Units) > 0) {
		fail("pluginConfig: identifiers and units are for plugin journald")
	}
	if f.Lookback != "" {
		d, err := time.ParseDuration(f.Lookback)
		if err != nil || d < 0 {
			fail("lookback %q: not a duration such as 5m", f.Lookback)
		}
		set.Lookback = d
	}
	switch {
	case set.BufferSize == 0:
		set.BufferSize = DefaultBufferSize
	case set.BufferSize < 0 || set.BufferSize > maxBufferSize:
		fail("bufferSize %d: want 1 to %d", set.BufferSize, maxBufferSize)
	}
	for i, s := range f.Skip {
		re, err := regexp.Compile(s)
		if err != nil {
			fail("skip[%d]: %w", i, err)
		}
		set.Skip = append(set.Skip, re)
	}
	for i, s := range f.SkipList {
		if s == "" {
			fail("skipList[%d]: an empty string would skip every line", i)
			continue
		}
		set.SkipList = append(set.SkipList, []byte(s))
	}
	if f.Delay != "" {
		d, err := time.ParseDuration(f.Delay)
		if err != nil || d < 0 {
			fail("delay %q: not a duration such as 5m", f.Delay)
		}
		set.Delay = d
	}
	switch {
	case set.Label != "":
	case set.Plugin == PluginJournald:
		set.Label = "journal"
	default:
		set.Label = "kernel log"
	}

	conds := map[string]bool{}
	for i, c := range f.Conditions {
		switch {
		case c.Type == "":
			fail("conditions[%d]: type is required", i)
		case c.Reason == "":
			fail("conditions[%d] (%s): reason is required", i, c.Type)
		case conds[c.Type]:
			fail("conditions[%d] (%s): duplicate condition type", i, c.Type)
		}
		conds[c.Type] = true
		set.Conditions = append(set.Conditions, Condition(c))
	}
	for i := range f.Rules {
		r, rerrs := compileRule(i, &f.Rules[i], conds, npd)
		errs = append(errs, rerrs...)
		set.Rules = append(set.Rules, r)
	}
	if len(set.Rules) == 0 {
		fail("rules: no rules")
	}
	return set, errs
}

func compileRule(i int, s *ruleSpec, conds map[string]bool, npd bool) (*Rule, []error) {
	var errs []error
	where := fmt.Sprintf("rules[%d]", i)
	if s.Reason != "" {
		where += fmt.Sprintf(" (%s)", s.Reason)
	}
	fail := func(format string, args ...any) {
		errs = append(errs, fmt.Errorf("%s: %s", where, fmt.Sprintf(format, args...)))
	}
	r := &Rule{Index: i, Condition: s.Condition, Reason: s.Reason, Pattern: s.Pattern, Message: s.Message,
		MessageSuffix: s.PatternGeneratedMessageSuffix, Count: s.Count, Severity: check.SeverityWarning}
	switch s.Type {
	case "temporary":
	case "permanent":
		r.Permanent, r.Severity = true, check.SeverityProblem
		switch {
		case s.Condition == "":
			fail("condition is required for a permanent rule")
		case !conds[s.Condition]:
			fail("condition %q is not in the file's conditions", s.Condition)
		}
	case "":
		fail("type is required (temporary or permanent)")
	default:
		fail("type %q: want temporary or permanent", s.Type)
	}
	if s.Reason == "" {
		fail("reason is required")
	}
	if s.Severity != "" {
		if err := r.Severity.UnmarshalText([]byte(s.Severity)); err != nil || r.Severity == check.SeverityOK {
			fail("severity %q: want warning or problem", s.Severity)
		}
	}
	if s.Pattern == "" {
		fail("pattern is required")
	} else {
		r.multiLine = strings.Contains(s.Pattern, `\n`) || strings.Contains(s.Pattern, "\n")
		expr := s.Pattern
		switch {
		case r.multiLine:
			// NPD matches to the end of its buffer: the newest line.
			expr = `(?:` + s.Pattern + `)\z`
			r.spanLines = maxNewlines(s.Pattern) + 1
		case npd:
			expr = `(?:` + s.Pattern + `)\z`
		}
		// Compiling the pattern alone first keeps the wrapping out of errors.
		re, err := regexp.Compile(s.Pattern)
		if err == nil {
			re, err = regexp.Compile(expr)
		}
		switch {
		case err != nil:
			fail("pattern: %v", err)
		case re.MatchString(""):
			fail("pattern %q matches an empty line, so it would match every line", s.Pattern)
		}
		r.re = re
	}
	if s.Recovery != "" {
		re, err := regexp.Compile(s.Recovery)
		if err != nil {
			fail("recovery: %v", err)
		}
		r.Recovery = re
	}
	if s.QuietPeriod != "" {
		d, err := time.ParseDuration(s.QuietPeriod)
		if err != nil || d <= 0 {
			fail("quietPeriod %q: not a positive duration such as 30m", s.QuietPeriod)
		}
		r.QuietPeriod = d
	}
	if (r.Recovery != nil || r.QuietPeriod > 0) && !r.Permanent {
		fail("recovery and quietPeriod apply only to permanent rules")
	}
	if s.Count < 0 || s.Count > maxCount {
		fail("count %d: want 0 to %d", s.Count, maxCount)
	}
	if s.Window != "" {
		d, err := time.ParseDuration(s.Window)
		if err != nil || d <= 0 {
			fail("window %q: not a positive duration such as 10m", s.Window)
		}
		r.Window = d
	}
	if s.Count > 1 && r.Window == 0 {
		fail("count %d needs a window such as 10m", s.Count)
	}
	for j, p := range s.Skip {
		re, err := regexp.Compile(p)
		if err != nil {
			fail("skip[%d]: %v", j, err)
		}
		r.Skip = append(r.Skip, re)
	}
	return r, errs
}

// compileJournald sets up a journald rule file. NPD's pluginConfig.source
// "kernel" alone reads the kernel's lines from /dev/kmsg, where journald
// copies them from: that needs no journal storage on the node, cannot lose
// lines to journald's rate limits and reports ring buffer overruns.
func compileJournald(set *RuleSet, f *ruleFile, fail func(string, ...any)) {
	pc := f.PluginConfig
	if pc == nil {
		pc = &pluginConfig{}
	}
	if pc.Timestamp != "" || pc.Message != "" || pc.TimestampFormat != "" {
		fail("pluginConfig: timestamp, message and timestampFormat are for plugin filelog; journal entries carry their own")
	}
	if pc.Source == "kernel" && len(pc.Identifiers) == 0 && len(pc.Units) == 0 {
		set.Plugin, set.LogPath = PluginKmsg, DefaultKmsgPath
		return
	}
	if pc.Source != "" {
		set.Identifiers = append(set.Identifiers, pc.Source)
	}
	for i, id := range pc.Identifiers {
		if id == "" || strings.ContainsAny(id, "\n=") {
			fail("pluginConfig.identifiers[%d] %q: not a SYSLOG_IDENTIFIER", i, id)
		}
		set.Identifiers = append(set.Identifiers, id)
	}
	for i, u := range pc.Units {
		if u == "" || strings.ContainsAny(u, "/\n= ") {
			fail("pluginConfig.units[%d] %q: not a unit name such as kubelet.service", i, u)
		}
		set.Units = append(set.Units, u)
	}
	if f.LogPath != "" {
		// NPD reads only the journal directory it is given.
		set.LogPath = hostPath(f.LogPath)
	}
}

// hostPath turns an absolute path on the node into one under the host root.
func hostPath(p string) string {
	return strings.TrimPrefix(path.Clean("/"+p), "/")
}

// npdLineParser implements NPD's filelog pluginConfig: a timestamp regexp
// and a message regexp, each giving its last group (the whole match when it
// has none), and a Go time layout read in the time zone of now.
func npdLineParser(pc *pluginConfig) (LineParser, error) {
	if pc.Timestamp == "" || pc.Message == "" || pc.TimestampFormat == "" {
		return nil, errors.New("timestamp, message and timestampFormat are all required")
	}
	tsRe, err := regexp.Compile(pc.Timestamp)
	if err != nil {
		return nil, fmt.Errorf("timestamp: %w", err)
	}
	msgRe, err := regexp.Compile(pc.Message)
	if err != nil {
		return nil, fmt.Errorf("message: %w", err)
	}
	layout := pc.TimestampFormat
	return func(line []byte, now time.Time) (time.Time, []byte, bool) {
		ts, ok := lastGroup(tsRe, line)
		if !ok {
			return time.Time{}, nil, false
		}
		t, err := time.ParseInLocation(layout, string(ts), now.Location())
		if err != nil {
			return time.Time{}, nil, false
		}
		if t.Year() == 0 {
			t = t.AddDate(now.Year(), 0, 0)
			if t.After(now.Add(24 * time.Hour)) {
				t = t.AddDate(-1, 0, 0)
			}
		}
		msg, ok := lastGroup(msgRe, line)
		if !ok {
			return time.Time{}, nil, false
		}
		return t, msg, true
	}, nil
}

// lastGroup is what NPD takes of a match: the last submatch, which is the
// whole match for an expression without groups; a group that did not
// take part is empty.
func lastGroup(re *regexp.Regexp, line []byte) ([]byte, bool) {
	m := re.FindSubmatchIndex(line)
	if m == nil {
		return nil, false
	}
	i := len(m) - 2
	if m[i] < 0 {
		return line[:0], true
	}
	return line[m[i]:m[i+1]], true
}
