// Package config loads node-doctor's YAML config file and applies it to the
// check definitions. Every unknown key, wrong type and out-of-range value is
// an error naming the key.
package config

import (
	"errors"
	"fmt"
	"net"
	"os"
	"reflect"
	"slices"
	"strconv"
	"strings"
	"time"

	"go.yaml.in/yaml/v3"

	"github.com/node-doctor/node-doctor/pkg/check"
)

// DefaultMetricsAddress is outside the Prometheus exporter range and the
// ports kubelet, kube-proxy and node-problem-detector use.
const DefaultMetricsAddress = ":19720"

// Limits on check scheduling.
const (
	MinInterval = time.Second
	MaxInterval = 24 * time.Hour
)

// Config is the agent's configuration after the file and flags are merged.
type Config struct {
	HostRoot       string
	MetricsAddress string
	LogLevel       string
	LogFormat      string
	// Kubeconfig and NodeName say where to report; empty Kubeconfig means
	// in-cluster config when in a pod, otherwise no reporting.
	Kubeconfig string
	NodeName   string
	// ConditionHeartbeat is how often unchanged node conditions are
	// rewritten.
	ConditionHeartbeat time.Duration
	// Disabled holds checks turned off by the file.
	Disabled map[string]bool
}

// Default returns the configuration used with no file and no flags.
func Default() Config {
	return Config{
		HostRoot: "/", MetricsAddress: DefaultMetricsAddress, LogLevel: "info", LogFormat: "text",
		ConditionHeartbeat: 5 * time.Minute, Disabled: map[string]bool{},
	}
}

// File is a parsed config file: its top-level values, validated, and its
// checks section, applied once the checks are built from the final config.
type File struct {
	// Path is where the file was read from; empty for a document.
	Path   string
	Config Config
	checks *yaml.Node
}

// ParseFile reads and parses the file at path; see Parse.
func ParseFile(path string) (*File, error) {
	b, err := os.ReadFile(path)
	if err != nil {
		return nil, fmt.Errorf("config: %w", err)
	}
	f, err := Parse(b)
	if err != nil {
		return nil, fmt.Errorf("config file %s: %w", path, err)
	}
	f.Path = path
	return f, nil
}

// Parse parses a config document, starting from Default, and validates its
// top-level values. The checks section is only parsed as YAML here.
func Parse(data []byte) (*File, error) {
	f := &File{Config: Default()}
	c := &f.Config
	var doc yaml.Node
	if err := yaml.Unmarshal(data, &doc); err != nil {
		return nil, err
	}
	if doc.Kind == 0 || len(doc.Content) == 0 {
		return f, c.Validate()
	}
	root := doc.Content[0]
	if root.Kind == yaml.ScalarNode && root.Tag == "!!null" {
		return f, c.Validate()
	}
	pairs, err := mapping(root, "")
	if err != nil {
		return nil, err
	}
	for _, p := range pairs {
		var err error
		switch p.key {
		case "hostRoot":
			c.HostRoot, err = str(p)
		case "metricsAddress":
			c.MetricsAddress, err = str(p)
		case "logLevel":
			c.LogLevel, err = str(p)
		case "logFormat":
			c.LogFormat, err = str(p)
		case "kubeconfig":
			c.Kubeconfig, err = str(p)
		case "nodeName":
			c.NodeName, err = str(p)
		case "conditionHeartbeat":
			c.ConditionHeartbeat, err = duration(p)
		case "checks":
			f.checks = p.value
		default:
			err = unknown(p, []string{"hostRoot", "metricsAddress", "logLevel", "logFormat", "kubeconfig", "nodeName", "conditionHeartbeat", "checks"})
		}
		if err != nil {
			return nil, err
		}
	}
	if err := c.Validate(); err != nil {
		return nil, err
	}
	return f, nil
}

// ApplyChecks writes the checks section's intervals, timeouts and settings
// into defs, and the checks it turns off into disabled. Unknown checks and
// keys and out-of-range values are errors naming the key.
func (f *File) ApplyChecks(defs []*check.Definition, disabled map[string]bool) error {
	if f.checks == nil {
		return nil
	}
	if err := applyChecks(f.checks, defs, disabled); err != nil {
		if f.Path != "" {
			return fmt.Errorf("config file %s: %w", f.Path, err)
		}
		return err
	}
	return nil
}

// LoadFile reads the file at path and applies it; see Load.
func LoadFile(path string, defs []*check.Definition) (Config, error) {
	f, err := ParseFile(path)
	if err != nil {
		return Config{}, err
	}
	if err := f.ApplyChecks(defs, f.Config.Disabled); err != nil {
		return Config{}, err
	}
	return f.Config, nil
}

// Load parses a config document and writes check intervals, timeouts and
// settings into defs.
func Load(data []byte, defs []*check.Definition) (Config, error) {
	f, err := Parse(data)
	if err != nil {
		return Default(), err
	}
	return f.Config, f.ApplyChecks(defs, f.Config.Disabled)
}

// Validate checks the top-level values.
func (c Config) Validate() error {
	var errs []error
	if c.HostRoot == "" {
		errs = append(errs, errors.New("hostRoot: must not be empty"))
	}
	if _, port, err := net.SplitHostPort(c.MetricsAddress); err != nil {
		errs = append(errs, fmt.Errorf("metricsAddress: %q is not host:port: %w", c.MetricsAddress, err))
	} else if n, err := strconv.Atoi(port); err != nil || n < 0 || n > 65535 {
		errs = append(errs, fmt.Errorf("metricsAddress: port %q is not a number from 0 to 65535", port))
	}
	if !slices.Contains([]string{"debug", "info", "warn", "error"}, c.LogLevel) {
		errs = append(errs, fmt.Errorf("logLevel: %q is not one of debug, info, warn, error", c.LogLevel))
	}
	if c.ConditionHeartbeat < 10*time.Second || c.ConditionHeartbeat > time.Hour {
		errs = append(errs, fmt.Errorf("conditionHeartbeat: %s is out of range 10s to 1h", c.ConditionHeartbeat))
	}
	if !slices.Contains([]string{"text", "json"}, c.LogFormat) {
		errs = append(errs, fmt.Errorf("logFormat: %q is not one of text, json", c.LogFormat))
	}
	return errors.Join(errs...)
}

type pair struct {
	path  string // dotted key path, for messages
	key   string
	node  *yaml.Node
	value *yaml.Node
}

func (p pair) errorf(format string, args ...any) error {
	return fmt.Errorf("%s (line %d): %s", p.path, p.value.Line, fmt.Sprintf(format, args...))
}

func mapping(n *yaml.Node, path string) ([]pair, error) {
	where := path
	if where == "" {
		where = "the document"
	}
	if n.Kind == yaml.ScalarNode && n.Tag == "!!null" && path != "" {
		return nil, nil // an empty section ("checks:") sets nothing
	}
	if n.Kind != yaml.MappingNode {
		return nil, fmt.Errorf("%s (line %d): must be a mapping of keys to values", where, n.Line)
	}
	seen := map[string]bool{}
	out := make([]pair, 0, len(n.Content)/2)
	for i := 0; i+1 < len(n.Content); i += 2 {
		k := n.Content[i]
		full := k.Value
		if path != "" {
			full = path + "." + k.Value
		}
		if seen[k.Value] {
			return nil, fmt.Errorf("%s (line %d): duplicate key", full, k.Line)
		}
		seen[k.Value] = true
		out = append(out, pair{path: full, key: k.Value, node: k, value: n.Content[i+1]})
	}
	return out, nil
}

func unknown(p pair, known []string) error {
	return fmt.Errorf("%s (line %d): unknown key; known keys: %s", p.path, p.node.Line, strings.Join(known, ", "))
}

func str(p pair) (string, error) {
	if p.value.Kind != yaml.ScalarNode || p.value.Tag != "!!str" {
		return "", p.errorf("must be a string")
	}
	return p.value.Value, nil
}

func duration(p pair) (time.Duration, error) {
	if p.value.Kind != yaml.ScalarNode {
		return 0, p.errorf("must be a duration such as 30s or 5m")
	}
	d, err := time.ParseDuration(p.value.Value)
	if err != nil {
		return 0, p.errorf("%q is not a duration such as 30s or 5m", p.value.Value)
	}
	return d, nil
}

func applyChecks(n *yaml.Node, defs []*check.Definition, disabled map[string]bool) error {
	pairs, err := mapping(n, "checks")
	if err != nil {
		return err
	}
	byName := map[string]*check.Definition{}
	names := make([]string, 0, len(defs))
	for _, d := range defs {
		byName[d.Name] = d
		names = append(names, d.Name)
	}
	for _, p := range pairs {
		d, ok := byName[p.key]
		if !ok {
			return fmt.Errorf("%s (line %d): unknown check; known checks: %s", p.path, p.node.Line, strings.Join(names, ", "))
		}
		if err := applyCheck(p, d, disabled); err != nil {
			return err
		}
	}
	return nil
}

func applyCheck(cp pair, d *check.Definition, disabled map[string]bool) error {
	pairs, err := mapping(cp.value, cp.path)
	if err != nil {
		return err
	}
	settingKeys := yamlKeys(d.Settings)
	known := append([]string{"enabled", "interval", "timeout"}, settingKeys...)
	rest := &yaml.Node{Kind: yaml.MappingNode, Tag: "!!map", Line: cp.value.Line}
	for _, p := range pairs {
		switch p.key {
		case "enabled":
			if p.value.Kind != yaml.ScalarNode || p.value.Tag != "!!bool" {
				return p.errorf("must be true or false")
			}
			disabled[d.Name] = p.value.Value == "false"
		case "interval":
			if d.Interval, err = duration(p); err != nil {
				return err
			}
			if d.Interval < MinInterval || d.Interval > MaxInterval {
				return p.errorf("%s is out of range %s to %s", d.Interval, MinInterval, MaxInterval)
			}
		case "timeout":
			if d.Timeout, err = duration(p); err != nil {
				return err
			}
			if d.Timeout <= 0 {
				return p.errorf("must be more than 0")
			}
		default:
			if !slices.Contains(settingKeys, p.key) {
				return unknown(p, known)
			}
			rest.Content = append(rest.Content, p.node, p.value)
		}
	}
	if d.Timeout > d.Interval {
		return fmt.Errorf("%s: timeout %s must not exceed interval %s", cp.path, d.Timeout, d.Interval)
	}
	if len(rest.Content) > 0 {
		if err := rest.Decode(d.Settings); err != nil {
			return fmt.Errorf("%s: %w", cp.path, err)
		}
	}
	if v, ok := d.Settings.(check.Validator); ok {
		if err := v.Validate(); err != nil {
			return fmt.Errorf("%s.%w", cp.path, err)
		}
	}
	return nil
}

// yamlKeys lists the top-level yaml keys of a settings struct pointer.
func yamlKeys(settings any) []string {
	if settings == nil {
		return nil
	}
	t := reflect.TypeOf(settings)
	for t.Kind() == reflect.Pointer {
		t = t.Elem()
	}
	if t.Kind() != reflect.Struct {
		return nil
	}
	var keys []string
	for f := range t.Fields() {
		name, _, _ := strings.Cut(f.Tag.Get("yaml"), ",")
		if name == "-" || !f.IsExported() {
			continue
		}
		if name == "" {
			name = strings.ToLower(f.Name)
		}
		keys = append(keys, name)
	}
	return keys
}
