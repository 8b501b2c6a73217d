package cri

import (
	"encoding/json"
	"sort"
	"strings"
)

// SandboxImageFromInfo finds the configured pause image in the verbose
// Status info: containerd 1.x puts "sandboxImage" in its "config" JSON,
// containerd 2.x has "pinnedImages": {"sandbox": ...}, CRI-O uses
// "pause_image". Returns "" when no value says.
func SandboxImageFromInfo(info map[string]string) string {
	keys := make([]string, 0, len(info))
	for k := range info {
		keys = append(keys, k)
	}
	sort.Strings(keys) // deterministic when several values name one
	for _, k := range keys {
		var v any
		if err := json.Unmarshal([]byte(info[k]), &v); err != nil {
			continue
		}
		if img := findSandboxImage(v, 0); img != "" {
			return img
		}
	}
	return ""
}

func findSandboxImage(v any, depth int) string {
	if depth > 8 {
		return ""
	}
	m, ok := v.(map[string]any)
	if !ok {
		return ""
	}
	keys := make([]string, 0, len(m))
	for k := range m {
		keys = append(keys, k)
	}
	sort.Strings(keys)
	for _, k := range keys {
		switch strings.ToLower(strings.ReplaceAll(k, "_", "")) {
		case "sandboximage", "pauseimage":
			if s, ok := m[k].(string); ok && s != "" {
				return s
			}
		case "pinnedimages":
			if p, ok := m[k].(map[string]any); ok {
				if s, ok := p["sandbox"].(string); ok && s != "" {
					return s
				}
			}
		}
	}
	for _, k := range keys {
		if img := findSandboxImage(m[k], depth+1); img != "" {
			return img
		}
	}
	return ""
}

// CNIDirsFromInfo finds the CNI config and binary directories in the
// verbose Status info (containerd: "confDir"/"binDir" in its config and
// "PluginConfDir"/"PluginDirs" in cniconfig; CRI-O: "network_dir" and
// "plugin_dirs"). Empty when the runtime does not say.
func CNIDirsFromInfo(info map[string]string) (confDir, binDir string) {
	keys := make([]string, 0, len(info))
	for k := range info {
		keys = append(keys, k)
	}
	sort.Strings(keys)
	for _, k := range keys {
		var v any
		if json.Unmarshal([]byte(info[k]), &v) != nil {
			continue
		}
		walkJSON(v, 0, func(key string, val any) {
			s := firstString(val)
			if s == "" {
				return
			}
			switch strings.ToLower(strings.ReplaceAll(key, "_", "")) {
			case "confdir", "pluginconfdir", "networkdir":
				if confDir == "" {
					confDir = s
				}
			case "bindir", "plugindirs", "plugindir":
				if binDir == "" {
					binDir = s
				}
			}
		})
	}
	return confDir, binDir
}

func firstString(v any) string {
	switch x := v.(type) {
	case string:
		return x
	case []any:
		if len(x) > 0 {
			s, _ := x[0].(string)
			return s
		}
	}
	return ""
}

func walkJSON(v any, depth int, f func(key string, val any)) {
	m, ok := v.(map[string]any)
	if !ok || depth > 8 {
		return
	}
	keys := make([]string, 0, len(m))
	for k := range m {
		keys = append(keys, k)
	}
	sort.Strings(keys)
	for _, k := range keys {
		f(k, m[k])
	}
	for _, k := range keys {
		walkJSON(m[k], depth+1, f)
	}
}
