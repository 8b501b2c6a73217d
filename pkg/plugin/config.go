package plugin

import (
	"bytes"
	"encoding/json"
	"errors"
	"fmt"
	"os"
	"path/filepath"
	"slices"
	"strings"
	"time"

	"golang.org/x/sys/unix"

	"github.com/node-doctor/node-doctor/pkg/kernel"
)

// Defaults for what a monitor file leaves out, as NPD has them.
const (
	DefaultInvokeInterval  = 30 * time.Second
	DefaultTimeout         = 5 * time.Second
	DefaultMaxOutputLength = 80
	DefaultConcurrency     = 3
	// MinInvokeInterval keeps a typo such as "30ms" from running scripts
	// without pause (NPD accepts any positive interval).
	MinInvokeInterval = time.Second
)

// Rule types, as NPD names them.
const (
	TypeTemporary = "temporary"
	TypePermanent = "permanent"
)

// kubeletConditions are the node condition types kubelet writes; a monitor
// may not drive them.
var kubeletConditions = []string{"Ready", "MemoryPressure", "DiskPressure", "PIDPressure", "NetworkUnavailable"}

// monitorFile is NPD's custom plugin monitor config as written.
type monitorFile struct {
	Plugin           string          `json:"plugin"`
	PluginConfig     pluginConfig    `json:"pluginConfig"`
	Source           string          `json:"source"`
	MetricsReporting *bool           `json:"metricsReporting"`
	Conditions       []conditionSpec `json:"conditions"`
	Rules            []ruleSpec      `json:"rules"`
}

type pluginConfig struct {
	InvokeInterval  *string `json:"invoke_interval"`
	Timeout         *string `json:"timeout"`
	MaxOutputLength *int    `json:"max_output_length"`
	Concurrency     *int    `json:"concurrency"`
	MessageChange   *bool   `json:"enable_message_change_based_condition_update"`
	SkipInitial     *bool   `json:"skip_initial_status"`
}

type conditionSpec struct {
	Type    string `json:"type"`
	Reason  string `json:"reason"`
	Message string `json:"message"`
}

type ruleSpec struct {
	Type           string   `json:"type"`
	Condition      string   `json:"condition"`
	Reason         string   `json:"reason"`
	Path           string   `json:"path"`
	Args           []string `json:"args"`
	Timeout        *string  `json:"timeout"`
	InvokeInterval *string  `json:"invoke_interval"`
}

// Monitor is one loaded custom plugin monitor file.
type Monitor struct {
	// File is where it was read from, for messages.
	File string
	// Source is the file's "source" (e.g. ntp-custom-plugin-monitor).
	Source          string
	InvokeInterval  time.Duration
	Timeout         time.Duration
	MaxOutputLength int
	Concurrency     int
	// MessageChange: a True condition takes a new message from the script
	// (enable_message_change_based_condition_update).
	MessageChange bool
	// SkipInitialStatus: the conditions are not reported before the first
	// scripts have answered.
	SkipInitialStatus bool
	Conditions        []Condition
	Rules             []*Rule
}

// Condition is a node condition a monitor drives, with its healthy state:
// the same as a rule file's.
type Condition = kernel.Condition

// Rule is one script to run.
type Rule struct {
	// Index is the rule's position in its file, from 0.
	Index     int
	Permanent bool
	Condition string
	Reason    string
	// Path is the script as the file names it; Args its arguments.
	Path string
	Args []string
	// Timeout is the rule's own or the file's.
	Timeout time.Duration
	// Interval is the rule's own invoke_interval or the file's.
	Interval time.Duration
}

func (r *Rule) String() string { return fmt.Sprintf("rules[%d] (%s)", r.Index, r.Reason) }

// LoadMonitor reads and checks a custom plugin monitor file from the agent's
// filesystem, including that every script it runs is there and executable.
func LoadMonitor(file string) (*Monitor, error) {
	b, err := os.ReadFile(file)
	if err != nil {
		return nil, fmt.Errorf("custom plugin monitor: %w", err)
	}
	m, err := ParseMonitor(file, b)
	if err != nil {
		return nil, err
	}
	var errs []error
	for _, r := range m.Rules {
		if err := executable(r.Path); err != nil {
			errs = append(errs, fmt.Errorf("%s: path: %w", r, err))
		}
	}
	if err := errors.Join(errs...); err != nil {
		return nil, fmt.Errorf("custom plugin monitor %s: %w", file, err)
	}
	return m, nil
}

// executable says why path cannot be run, or nil. A relative path is
// resolved from the agent's working directory, as NPD does.
func executable(path string) error {
	fi, err := os.Stat(path)
	if err != nil {
		if errors.Is(err, os.ErrNotExist) && !filepath.IsAbs(path) {
			wd, _ := os.Getwd()
			return fmt.Errorf("%w (a relative path is resolved from the agent's working directory, %s)", err, wd)
		}
		return err
	}
	if !fi.Mode().IsRegular() {
		return fmt.Errorf("%s is not a regular file", path)
	}
	if err := unix.Access(path, unix.X_OK); err != nil {
		return fmt.Errorf("%s is not executable (mode %s): %w", path, fi.Mode().Perm(), err)
	}
	return nil
}

// ParseMonitor checks the monitor file data; name is used in errors. Every
// problem is reported, each naming the field as NPD names it. Scripts are
// not looked at (LoadMonitor does).
func ParseMonitor(name string, data []byte) (*Monitor, error) {
	if why := notPluginMonitor(data); why != "" {
		return nil, fmt.Errorf("custom plugin monitor %s: refused: %s", name, why)
	}
	var f monitorFile
	d := json.NewDecoder(bytes.NewReader(data))
	d.DisallowUnknownFields()
	if err := d.Decode(&f); err != nil {
		return nil, fmt.Errorf("custom plugin monitor %s: %w", name, kernel.NPDDecodeError(data, err, "custom plugin monitor"))
	}
	if d.More() {
		return nil, fmt.Errorf("custom plugin monitor %s: data after the JSON object", name)
	}
	m, errs := compile(name, &f)
	if len(errs) > 0 {
		return nil, fmt.Errorf("custom plugin monitor %s: %w", name, errors.Join(errs...))
	}
	return m, nil
}

// notPluginMonitor says why data is not a monitor file node-doctor runs:
// another kind of NPD config, or a custom plugin monitor whose binary
// node-doctor replaces or cannot run (health-checker, log-counter, Windows).
func notPluginMonitor(data []byte) string {
	var top map[string]json.RawMessage
	if json.Unmarshal(data, &top) != nil {
		var list []json.RawMessage
		if json.Unmarshal(data, &list) == nil {
			return "a JSON list: not a custom plugin monitor (NPD's --config.custom-plugin-monitor files are objects with \"plugin\": \"custom\")"
		}
		return "" // the decoder says what is wrong
	}
	var p string
	if raw, ok := top["plugin"]; ok && json.Unmarshal(raw, &p) == nil && p != "custom" {
		return fmt.Sprintf("plugin %q: not a custom plugin monitor (NPD's --config.custom-plugin-monitor files say \"custom\"); a system-log-monitor file belongs under checks.kernel-log.ruleFiles", p)
	}
	if _, ok := top["plugin"]; !ok {
		return "no plugin: not a custom plugin monitor (NPD's --config.custom-plugin-monitor files say \"plugin\": \"custom\")"
	}
	return kernel.CustomPluginRefusal(data)
}

func compile(name string, f *monitorFile) (*Monitor, []error) {
	var errs []error
	fail := func(format string, args ...any) { errs = append(errs, fmt.Errorf(format, args...)) }
	m := &Monitor{
		File: name, Source: f.Source,
		InvokeInterval: DefaultInvokeInterval, Timeout: DefaultTimeout,
		MaxOutputLength: DefaultMaxOutputLength, Concurrency: DefaultConcurrency,
	}
	if m.Source == "" {
		m.Source = strings.TrimSuffix(filepath.Base(name), filepath.Ext(name))
	}
	pc := f.PluginConfig
	if pc.InvokeInterval != nil {
		d, err := parseDuration("pluginConfig.invoke_interval", *pc.InvokeInterval)
		switch {
		case err != nil:
			errs = append(errs, err)
		case d < MinInvokeInterval:
			fail("pluginConfig.invoke_interval %q: must be at least %s", *pc.InvokeInterval, MinInvokeInterval)
		default:
			m.InvokeInterval = d
		}
	}
	if pc.Timeout != nil {
		d, err := parseDuration("pluginConfig.timeout", *pc.Timeout)
		switch {
		case err != nil:
			errs = append(errs, err)
		case d <= 0:
			fail("pluginConfig.timeout %q: must be more than 0", *pc.Timeout)
		default:
			m.Timeout = d
		}
	}
	if pc.MaxOutputLength != nil {
		if *pc.MaxOutputLength < 0 {
			fail("pluginConfig.max_output_length %d: must not be negative", *pc.MaxOutputLength)
		} else {
			m.MaxOutputLength = *pc.MaxOutputLength
		}
	}
	if pc.Concurrency != nil {
		if *pc.Concurrency < 1 {
			fail("pluginConfig.concurrency %d: must be at least 1 (NPD would run nothing)", *pc.Concurrency)
		} else {
			m.Concurrency = *pc.Concurrency
		}
	}
	m.MessageChange = pc.MessageChange != nil && *pc.MessageChange
	m.SkipInitialStatus = pc.SkipInitial != nil && *pc.SkipInitial

	for i, c := range f.Conditions {
		where := fmt.Sprintf("conditions[%d]", i)
		switch {
		case c.Type == "":
			fail("%s: type is empty", where)
		case slices.Contains(kubeletConditions, c.Type):
			fail("%s: type %s is kubelet's own condition; node-doctor never writes it", where, c.Type)
		case slices.ContainsFunc(m.Conditions, func(o Condition) bool { return o.Type == c.Type }):
			fail("%s: type %s is listed twice", where, c.Type)
		}
		if c.Reason == "" {
			fail("%s (%s): reason is empty", where, c.Type)
		}
		m.Conditions = append(m.Conditions, Condition(c))
	}
	for i, rs := range f.Rules {
		r := &Rule{Index: i, Condition: rs.Condition, Reason: rs.Reason, Path: rs.Path, Args: rs.Args, Timeout: m.Timeout, Interval: m.InvokeInterval}
		switch rs.Type {
		case TypeTemporary:
		case TypePermanent:
			r.Permanent = true
			if !slices.ContainsFunc(m.Conditions, func(c Condition) bool { return c.Type == rs.Condition }) {
				fail("%s: condition %q is not in the file's conditions (NPD: permanent problem does not have preset default condition)", r, rs.Condition)
			}
		default:
			fail("%s: type %q is not temporary or permanent", r, rs.Type)
		}
		if rs.Reason == "" {
			fail("%s: reason is empty", r)
		}
		if rs.Path == "" {
			fail("%s: path is empty", r)
		}
		if rs.Timeout != nil {
			d, err := parseDuration(r.String()+": timeout", *rs.Timeout)
			switch {
			case err != nil:
				errs = append(errs, err)
			case d <= 0:
				fail("%s: timeout %q: must be more than 0", r, *rs.Timeout)
			case d > m.Timeout:
				fail("%s: timeout %s is longer than pluginConfig.timeout %s (NPD refuses it too)", r, d, m.Timeout)
			default:
				r.Timeout = d
			}
		}
		if rs.InvokeInterval != nil {
			d, err := parseDuration(r.String()+": invoke_interval", *rs.InvokeInterval)
			switch {
			case err != nil:
				errs = append(errs, err)
			case d < MinInvokeInterval:
				fail("%s: invoke_interval %q: must be at least %s", r, *rs.InvokeInterval, MinInvokeInterval)
			default:
				r.Interval = d
			}
		}
		m.Rules = append(m.Rules, r)
	}
	return m, errs
}

func parseDuration(field, s string) (time.Duration, error) {
	d, err := time.ParseDuration(s)
	if err != nil {
		return 0, fmt.Errorf("%s %q: not a duration such as 30s or 5m", field, s)
	}
	return d, nil
}
