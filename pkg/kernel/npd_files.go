package kernel

import (
	"bytes"
	"encoding/json"
	"errors"
	"fmt"
	"reflect"
	"regexp"
	"strings"
)

// npdRefusal says why an NPD config file is not a system-log-monitor file
// node-doctor can use, in NPD's terms, or "" when it is one (or is not
// recognisably anything else: the strict decoder then names what is wrong).
func npdRefusal(data []byte) string {
	var list []json.RawMessage
	if json.Unmarshal(data, &list) == nil {
		return "a JSON list, not a monitor config (NPD's guestosconfig known-modules.json is such a list: the system-stats-monitor's osFeature metric reads it); node-doctor has no use for it"
	}
	var top map[string]json.RawMessage
	if json.Unmarshal(data, &top) != nil {
		return ""
	}
	has := func(keys ...string) bool {
		for _, k := range keys {
			if _, ok := top[k]; ok {
				return true
			}
		}
		return false
	}
	var plugin, logPath string
	_ = json.Unmarshal(top["plugin"], &plugin)
	_ = json.Unmarshal(top["logPath"], &logPath)
	switch {
	case has("apiEndpoint", "exportPeriod", "metadataFetchInterval"):
		return "an exporter config (NPD's Stackdriver exporter, --exporter.stackdriver): node-doctor reports to the Kubernetes API and to Prometheus only"
	case plugin == "" && has("cpu", "disk", "memory", "host", "osFeature", "net", "invokeInterval"):
		return "a system-stats-monitor config (NPD's --config.system-stats-monitor): node-doctor does not collect host statistics; node_exporter exports them " +
			"(node_cpu_seconds_total, node_load1, node_memory_*, node_filesystem_*, node_disk_*, node_network_*, node_boot_time_seconds, node_os_info)"
	case plugin == "custom":
		if why := customRefusal(top); why != "" {
			return why
		}
		return "a custom plugin monitor (NPD's --config.custom-plugin-monitor, plugin \"custom\"), not a system-log-monitor file: " +
			"list it under checks.custom-plugin.monitors, which runs its scripts as NPD does (docs/plugins.md)"
	case windowsPath.MatchString(logPath):
		return fmt.Sprintf("a Windows-only config (logPath %s): node-doctor runs on Linux nodes", logPath)
	}
	return ""
}

// windowsPath matches C:\... and C:/...
var windowsPath = regexp.MustCompile(`^[A-Za-z]:[\\/]`)

// CustomPluginRefusal says why node-doctor does not run a custom plugin
// monitor file (one whose binary it replaces or cannot run), or "" when it
// runs its scripts.
func CustomPluginRefusal(data []byte) string {
	var top map[string]json.RawMessage
	if json.Unmarshal(data, &top) != nil {
		return ""
	}
	return customRefusal(top)
}

// customRefusal explains a custom plugin monitor node-doctor does not run
// by what its rules run, or returns "" for one it runs.
func customRefusal(top map[string]json.RawMessage) string {
	var rules []struct {
		Path string   `json:"path"`
		Args []string `json:"args"`
	}
	_ = json.Unmarshal(top["rules"], &rules)
	var path string
	var args []string
	if len(rules) > 0 {
		path, args = rules[0].Path, rules[0].Args
	}
	arg := func(name string) string {
		for _, a := range args {
			if v, ok := strings.CutPrefix(a, "--"+name+"="); ok {
				return v
			}
		}
		return ""
	}
	base := path[strings.LastIndexAny(path, `/\`)+1:]
	switch {
	case windowsPath.MatchString(path):
		return fmt.Sprintf("a Windows-only custom plugin monitor that runs %s: node-doctor runs on Linux nodes", path)
	case base == "health-checker":
		c := arg("component")
		who := orValue(c, "a component")
		if c == "cri" {
			who = "the container runtime (--component=cri)"
		}
		msg := fmt.Sprintf("NPD's health-checker for %s, a custom plugin monitor that runs %s: node-doctor does not run it", who, path)
		switch c {
		case "containerd", "docker", "cri":
			msg += "; it watches the container runtime natively over CRI instead (checks cri-runtime and cri-runtime-ready, condition ContainerRuntimeProblem)"
		case "kubelet":
			msg += "; its check kubelet-health does this natively (condition KubeletUnhealthy, as NPD's; docs/kubelet.md)"
		}
		return msg
	case base == "log-counter":
		return fmt.Sprintf("NPD's log-counter, a custom plugin monitor that counts journal lines with %s: node-doctor does not run it; "+
			"a rule file with plugin journald and a rule with count and window counts the same lines natively (docs/kernel.md)", path)
	}
	return ""
}

func orValue(s, def string) string {
	if s == "" {
		return def
	}
	return s
}

// NPDDecodeError turns a JSON decoder error on one of NPD's configs (kind:
// "system-log-monitor", "custom plugin monitor") into one that names the
// line and column or the field, in the file's own terms.
func NPDDecodeError(data []byte, err error, kind string) error {
	var syn *json.SyntaxError
	var typ *json.UnmarshalTypeError
	switch {
	case errors.As(err, &syn):
		line, col := lineCol(data, syn.Offset)
		return fmt.Errorf("line %d, column %d: JSON syntax error: %s", line, col, strings.TrimPrefix(syn.Error(), "json: "))
	case errors.As(err, &typ):
		line, col := lineCol(data, typ.Offset)
		field := typ.Field
		if field == "" {
			field = "the file"
		}
		return fmt.Errorf("line %d, column %d: %s: want %s, got a JSON %s", line, col, field, jsonKind(typ.Type), typ.Value)
	}
	if f, ok := strings.CutPrefix(err.Error(), "json: unknown field "); ok {
		return fmt.Errorf("unknown field %s: not a field of NPD's %s config (NPD would ignore it silently; node-doctor refuses it so that a misspelt field is not lost)", f, kind)
	}
	return errors.New(strings.TrimPrefix(err.Error(), "json: "))
}

// lineCol turns a byte offset into a 1-based line and column.
func lineCol(data []byte, off int64) (int, int) {
	off = min(max(off, 0), int64(len(data)))
	before := data[:off]
	line := bytes.Count(before, []byte("\n")) + 1
	col := int(off) - bytes.LastIndexByte(before, '\n')
	return line, col
}

// jsonKind names a Go type as what the JSON must hold.
func jsonKind(t reflect.Type) string {
	if t == nil {
		return "a value"
	}
	switch t.Kind() {
	case reflect.String:
		return "a string"
	case reflect.Bool:
		return "true or false"
	case reflect.Int, reflect.Int8, reflect.Int16, reflect.Int32, reflect.Int64,
		reflect.Uint, reflect.Uint8, reflect.Uint16, reflect.Uint32, reflect.Uint64:
		return "a whole number"
	case reflect.Float32, reflect.Float64:
		return "a number"
	case reflect.Slice, reflect.Array:
		return "a list"
	case reflect.Pointer:
		return jsonKind(t.Elem())
	}
	return "an object"
}
