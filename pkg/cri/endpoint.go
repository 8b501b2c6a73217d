package cri

import (
	"errors"
	"fmt"
	"io/fs"
	"path"
	"strings"
	"time"
)

// DefaultRuntimeEndpoints are the sockets crictl tries, in order, when no
// endpoint is configured: containerd, CRI-O, cri-dockerd.
var DefaultRuntimeEndpoints = []string{
	"unix:///run/containerd/containerd.sock",
	"unix:///run/crio/crio.sock",
	"unix:///var/run/cri-dockerd.sock",
}

// DefaultCrictlConfig is crictl's config file when $CRI_CONFIG_FILE is unset.
const DefaultCrictlConfig = "/etc/crictl.yaml"

// Environment variables crictl reads.
const (
	EnvRuntimeEndpoint = "CONTAINER_RUNTIME_ENDPOINT"
	EnvImageEndpoint   = "IMAGE_SERVICE_ENDPOINT"
	EnvConfigFile      = "CRI_CONFIG_FILE"
)

// EndpointOptions are the inputs of endpoint resolution.
type EndpointOptions struct {
	// RuntimeEndpoint and ImageEndpoint come from flags; empty when unset.
	RuntimeEndpoint string
	ImageEndpoint   string
	// Getenv reads node-doctor's environment; nil reads nothing.
	Getenv func(string) string
	// HostFS is the node's filesystem; the crictl config is read from it.
	HostFS fs.FS
}

// Endpoints is the outcome of resolution.
type Endpoints struct {
	// Runtime holds the candidate runtime endpoints in order: one when
	// configured, the defaults otherwise.
	Runtime []string
	// Image is the image service endpoint; empty means the runtime's.
	Image string
	// Timeout is the per-call timeout from the crictl config; zero if unset.
	Timeout time.Duration
	// Source says where Runtime came from, for messages.
	Source string
	// Explicit is true when an endpoint was configured rather than defaulted:
	// a missing socket is then a problem, not "no runtime on this machine".
	Explicit bool
}

// ResolveEndpoints picks the endpoints the way crictl does: flag, then
// $CONTAINER_RUNTIME_ENDPOINT, then the crictl config file ($CRI_CONFIG_FILE
// or /etc/crictl.yaml, read under the host root), then the default sockets.
// The image endpoint follows the same order and falls back to the runtime's.
func ResolveEndpoints(o EndpointOptions) (Endpoints, error) {
	getenv := o.Getenv
	if getenv == nil {
		getenv = func(string) string { return "" }
	}
	cfgPath := DefaultCrictlConfig
	if p := getenv(EnvConfigFile); p != "" {
		cfgPath = p
	}
	var cc CrictlConfig
	if o.HostFS != nil {
		b, err := fs.ReadFile(o.HostFS, hostPath(cfgPath))
		switch {
		case err == nil:
			if cc, err = ParseCrictlConfig(b); err != nil {
				return Endpoints{}, fmt.Errorf("cri: %s: %w", cfgPath, err)
			}
		case errors.Is(err, fs.ErrNotExist):
		default:
			return Endpoints{}, fmt.Errorf("cri: read %s: %w", cfgPath, err)
		}
	}
	e := Endpoints{Timeout: cc.Timeout, Explicit: true}
	switch {
	case o.RuntimeEndpoint != "":
		e.Runtime, e.Source = []string{o.RuntimeEndpoint}, "--runtime-endpoint"
	case getenv(EnvRuntimeEndpoint) != "":
		e.Runtime, e.Source = []string{getenv(EnvRuntimeEndpoint)}, "$"+EnvRuntimeEndpoint
	case cc.RuntimeEndpoint != "":
		e.Runtime, e.Source = []string{cc.RuntimeEndpoint}, cfgPath
	default:
		e.Runtime, e.Source, e.Explicit = DefaultRuntimeEndpoints, "default sockets", false
	}
	switch {
	case o.ImageEndpoint != "":
		e.Image = o.ImageEndpoint
	case getenv(EnvImageEndpoint) != "":
		e.Image = getenv(EnvImageEndpoint)
	case cc.ImageEndpoint != "":
		e.Image = cc.ImageEndpoint
	}
	for _, ep := range append(append([]string{}, e.Runtime...), e.Image) {
		if ep == "" {
			continue
		}
		if _, err := SocketPath(ep); err != nil {
			return Endpoints{}, fmt.Errorf("cri: endpoint from %s: %w", e.Source, err)
		}
	}
	return e, nil
}

// SocketPath maps a unix endpoint ("unix:///run/x.sock", or a bare absolute
// path as kubelet still accepts) to its path relative to the host root.
func SocketPath(endpoint string) (string, error) {
	p := endpoint
	if rest, ok := strings.CutPrefix(endpoint, "unix://"); ok {
		p = rest
	} else if i := strings.Index(endpoint, "://"); i >= 0 {
		return "", fmt.Errorf("endpoint %q: only unix:// sockets are supported, not %s://", endpoint, endpoint[:i])
	}
	if !strings.HasPrefix(p, "/") {
		return "", fmt.Errorf("endpoint %q: want unix:///absolute/path.sock", endpoint)
	}
	return hostPath(p), nil
}

// hostPath turns an absolute node path into one relative to the host root.
func hostPath(p string) string {
	p = strings.TrimLeft(path.Clean("/"+p), "/")
	if p == "" {
		return "."
	}
	return p
}
