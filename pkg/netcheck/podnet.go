package netcheck

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"io/fs"
	"path"
	"strings"
)

// DefaultCNIConfDir is where kubelet and container runtimes read CNI config.
const DefaultCNIConfDir = "/etc/cni/net.d"

// podNetwork is what the node shows of its pod networking.
type podNetwork struct {
	bridges    []Bridge // bridges carrying pods
	cniConfigs []string // CNI config files found
	ipv6       bool     // IPv6 pod addressing seen on a bridge or in CNI config
}

func (p podNetwork) present() bool { return len(p.bridges) > 0 || len(p.cniConfigs) > 0 }

// detectPodNetwork looks at the pod bridges and the CNI config directory.
func detectPodNetwork(ctx context.Context, fsys fs.FS, bl BridgeLister, bridgeNames []string, cniConfDir string) (podNetwork, error) {
	var p podNetwork
	all, err := bl.Bridges(ctx)
	if err != nil {
		return p, err
	}
	p.bridges = podBridges(all, bridgeNames)
	for _, b := range p.bridges {
		p.ipv6 = p.ipv6 || b.GlobalIPv6
	}
	dir := strings.TrimPrefix(path.Clean(cniConfDir), "/")
	entries, err := fs.ReadDir(fsys, dir)
	if err != nil && !errors.Is(err, fs.ErrNotExist) {
		return p, fmt.Errorf("read CNI config dir %s: %w", cniConfDir, err)
	}
	for _, e := range entries {
		switch path.Ext(e.Name()) {
		case ".conf", ".conflist", ".json":
		default:
			continue
		}
		p.cniConfigs = append(p.cniConfigs, path.Join(cniConfDir, e.Name()))
		b, err := fs.ReadFile(fsys, path.Join(dir, e.Name()))
		if err != nil {
			return p, fmt.Errorf("read CNI config: %w", err)
		}
		p.ipv6 = p.ipv6 || cniConfigHasIPv6(b)
	}
	return p, nil
}

// cniConfigHasIPv6 reports whether a CNI config assigns IPv6 addresses: any
// "subnet" or "rangeStart" value that is an IPv6 prefix. Unparsable configs
// say nothing.
func cniConfigHasIPv6(b []byte) bool {
	var v any
	if json.Unmarshal(b, &v) != nil {
		return false
	}
	return walkIPv6(v)
}

func walkIPv6(v any) bool {
	switch t := v.(type) {
	case map[string]any:
		for k, val := range t {
			if s, ok := val.(string); ok && (k == "subnet" || k == "rangeStart") && strings.Contains(s, ":") {
				return true
			}
			if walkIPv6(val) {
				return true
			}
		}
	case []any:
		for _, val := range t {
			if walkIPv6(val) {
				return true
			}
		}
	}
	return false
}
