// Package kube reports findings to Kubernetes: the node conditions
// node-doctor owns, and Events on the Node or on the Pod a finding is about.
package kube

import (
	"context"
	"errors"
	"fmt"
	"net/http"
	"net/url"
	"os"
	"strconv"
	"strings"

	"github.com/prometheus/client_golang/prometheus"
	corev1 "k8s.io/api/core/v1"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/runtime"
	"k8s.io/apimachinery/pkg/types"
	"k8s.io/client-go/rest"
	"k8s.io/client-go/tools/clientcmd"

	"github.com/node-doctor/node-doctor/pkg/kube/kubeapi"
)

// ErrNoCluster means no kubeconfig was given and the agent is not in a pod.
var ErrNoCluster = errors.New("no cluster configured: no --kubeconfig and not running in a pod")

// ClientOptions say how to reach the API server.
type ClientOptions struct {
	Kubeconfig string
	QPS        float32
	Burst      int
	UserAgent  string
}

// RESTConfig returns the client config: the kubeconfig file when given,
// otherwise in-cluster config, otherwise ErrNoCluster.
func RESTConfig(o ClientOptions) (*rest.Config, error) {
	var cfg *rest.Config
	var err error
	switch {
	case o.Kubeconfig != "":
		cfg, err = clientcmd.BuildConfigFromFlags("", o.Kubeconfig)
		if err != nil {
			return nil, fmt.Errorf("kube: load kubeconfig %s: %w", o.Kubeconfig, err)
		}
	case os.Getenv("KUBERNETES_SERVICE_HOST") != "":
		cfg, err = rest.InClusterConfig()
		if err != nil {
			return nil, fmt.Errorf("kube: in-cluster config: %w", err)
		}
	default:
		return nil, ErrNoCluster
	}
	cfg.QPS, cfg.Burst = o.QPS, o.Burst
	cfg.UserAgent = o.UserAgent
	// Protobuf: at 10,000 Services the lists are half the bytes of JSON and
	// decode with less garbage.
	cfg.ContentType = runtime.ContentTypeProtobuf
	cfg.AcceptContentTypes = runtime.ContentTypeProtobuf + "," + runtime.ContentTypeJSON
	return cfg, nil
}

// Instrument counts every request made with cfg in
// node_doctor_kube_api_requests_total. Call it before building clients.
func (m *Metrics) Instrument(cfg *rest.Config) {
	if m == nil {
		return
	}
	cfg.Wrap(func(rt http.RoundTripper) http.RoundTripper {
		return countingTransport{next: rt, c: m.APIRequests}
	})
}

type countingTransport struct {
	next http.RoundTripper
	c    *prometheus.CounterVec
}

func (t countingTransport) RoundTrip(req *http.Request) (*http.Response, error) {
	verb, resource := RequestKind(req.Method, req.URL)
	resp, err := t.next.RoundTrip(req)
	code := "error"
	if err == nil {
		code = strconv.Itoa(resp.StatusCode)
	}
	t.c.WithLabelValues(verb, resource, code).Inc()
	return resp, err
}

// RequestKind names an API request the way the API server's own metrics do:
// verb (get, list, watch, create, patch, update, delete) and resource
// ("nodes/status"); both are bounded sets, never object names.
func RequestKind(method string, u *url.URL) (verb, resource string) {
	parts := strings.Split(strings.Trim(u.Path, "/"), "/")
	// /api/v1/... or /apis/GROUP/VERSION/...
	switch {
	case len(parts) >= 2 && parts[0] == "api":
		parts = parts[2:]
	case len(parts) >= 3 && parts[0] == "apis":
		parts = parts[3:]
	default:
		parts = nil
	}
	if len(parts) >= 2 && parts[0] == "namespaces" && len(parts) != 2 {
		parts = parts[2:] // namespaced resource; bare /namespaces/NAME is a namespace
	}
	named := len(parts) != 1 // discovery and /version are reads of one thing
	switch len(parts) {
	case 0:
		resource = "other"
	case 1, 2:
		resource = parts[0]
	default:
		resource = parts[0] + "/" + parts[2]
	}
	switch method {
	case http.MethodGet:
		switch {
		case u.Query().Get("watch") == "true" || u.Query().Get("watch") == "1":
			verb = "watch"
		case named:
			verb = "get"
		default:
			verb = "list"
		}
	case http.MethodPost:
		verb = "create"
	case http.MethodPatch:
		verb = "patch"
	case http.MethodPut:
		verb = "update"
	case http.MethodDelete:
		verb = "delete"
	default:
		verb = "other"
	}
	if resource == "other" {
		return verb, resource
	}
	return verb, strings.ToLower(resource)
}

// NodeName picks the node's name: the flag, then NODE_NAME (downward API),
// then the hostname, lower-cased as kubelet registers it.
func NodeName(flag string, getenv func(string) string, hostname func() (string, error)) (string, error) {
	if flag != "" {
		return flag, nil
	}
	if n := getenv("NODE_NAME"); n != "" {
		return n, nil
	}
	h, err := hostname()
	if err != nil {
		return "", fmt.Errorf("kube: node name: no --node-name, no NODE_NAME, and hostname failed: %w", err)
	}
	return strings.ToLower(strings.TrimSpace(h)), nil
}

// NodeAPI is what the condition manager needs of the API server.
type NodeAPI interface {
	GetNode(ctx context.Context, name string) (*corev1.Node, error)
	PatchNodeStatus(ctx context.Context, name string, patch []byte) error
}

// EventAPI is what the event recorder needs of the API server.
type EventAPI interface {
	GetEvent(ctx context.Context, namespace, name string) (*corev1.Event, error)
	CreateEvent(ctx context.Context, ev *corev1.Event) error
	PatchEvent(ctx context.Context, namespace, name string, patch []byte) error
}

// API implements NodeAPI and EventAPI over a clientset.
type API struct{ Client Interface }

// GetNode reads a node.
func (a API) GetNode(ctx context.Context, name string) (*corev1.Node, error) {
	return a.Client.Nodes().Get(ctx, name, metav1.GetOptions{})
}

// PatchNodeStatus applies a strategic merge patch to the node's status.
func (a API) PatchNodeStatus(ctx context.Context, name string, patch []byte) error {
	_, err := a.Client.Nodes().PatchStatus(ctx, name, patch)
	return err
}

// GetEvent reads an event.
func (a API) GetEvent(ctx context.Context, namespace, name string) (*corev1.Event, error) {
	return a.Client.Events(namespace).Get(ctx, name, metav1.GetOptions{})
}

// CreateEvent creates an event.
func (a API) CreateEvent(ctx context.Context, ev *corev1.Event) error {
	_, err := a.Client.Events(ev.Namespace).Create(ctx, ev, metav1.CreateOptions{})
	return err
}

// PatchEvent merge-patches an event.
func (a API) PatchEvent(ctx context.Context, namespace, name string, patch []byte) error {
	_, err := a.Client.Events(namespace).Patch(ctx, name, types.MergePatchType, patch, metav1.PatchOptions{})
	return err
}

// ConnectOptions say how to reach the API server and which node this is.
type ConnectOptions struct {
	ClientOptions
	// NodeName is the --node-name flag; see NodeName.
	NodeName string
	// Metrics, when set, counts every request (see Instrument).
	Metrics *Metrics
	// Informers, when set, are connected to the cluster, or told why
	// there is none.
	Informers *Informers
}

// Cluster is a connection to the API server for this node.
type Cluster struct {
	Config *rest.Config
	Client Interface
	Node   string
}

// Connect builds the REST config, the client and the node name, and
// connects the informers to them. Without a cluster the error is
// ErrNoCluster; on any error the informers say why their reads fail.
func Connect(o ConnectOptions) (*Cluster, error) {
	c, err := connect(o)
	if err != nil {
		if o.Informers != nil {
			o.Informers.Disconnected(err)
		}
		return nil, err
	}
	if o.Informers != nil {
		o.Informers.Connect(c.Client, c.Node, 0)
	}
	return c, nil
}

func connect(o ConnectOptions) (*Cluster, error) {
	rc, err := RESTConfig(o.ClientOptions)
	if err != nil {
		return nil, err
	}
	o.Metrics.Instrument(rc)
	cs, err := kubeapi.NewClientset(rc)
	if err != nil {
		return nil, err
	}
	node, err := NodeName(o.NodeName, os.Getenv, os.Hostname)
	if err != nil {
		return nil, err
	}
	return &Cluster{Config: rc, Client: cs, Node: node}, nil
}

// Interface is the part of the API node-doctor uses (see kubeapi).
type Interface = kubeapi.Interface
