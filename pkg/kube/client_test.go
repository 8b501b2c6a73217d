package kube

import (
	"context"
	"net/http"
	"net/http/httptest"
	"net/url"
	"testing"

	"github.com/prometheus/client_golang/prometheus/testutil"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/client-go/kubernetes"
	"k8s.io/client-go/rest"
)

func TestRequestKind(t *testing.T) {
	for _, c := range []struct{ method, url, verb, resource string }{
		{"GET", "/api/v1/nodes/n1", "get", "nodes"},
		{"PATCH", "/api/v1/nodes/n1/status", "patch", "nodes/status"},
		{"GET", "/api/v1/nodes?fieldSelector=metadata.name%3Dn1&limit=500", "list", "nodes"},
		{"GET", "/api/v1/nodes?fieldSelector=metadata.name%3Dn1&watch=true", "watch", "nodes"},
		{"GET", "/api/v1/services?watch=true&sendInitialEvents=true", "watch", "services"},
		{"GET", "/apis/discovery.k8s.io/v1/endpointslices?limit=500", "list", "endpointslices"},
		{"POST", "/api/v1/namespaces/default/events", "create", "events"},
		{"GET", "/api/v1/namespaces/default/events/n1.abc", "get", "events"},
		{"PATCH", "/api/v1/namespaces/kube-system/events/x", "patch", "events"},
		{"GET", "/api/v1/namespaces/default", "get", "namespaces"},
		{"GET", "/apis/discovery.k8s.io/v1", "get", "other"},
		{"GET", "/version", "get", "other"},
		{"PUT", "/apis/coordination.k8s.io/v1/namespaces/kube-node-lease/leases/n1", "update", "leases"},
	} {
		u, err := url.Parse(c.url)
		if err != nil {
			t.Fatal(err)
		}
		v, r := RequestKind(c.method, u)
		if v != c.verb || r != c.resource {
			t.Errorf("%s %s: got %s %s, want %s %s", c.method, c.url, v, r, c.verb, c.resource)
		}
	}
}

func TestInstrumentCountsRequests(t *testing.T) {
	srv := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		if r.URL.Path == "/api/v1/nodes/gone" {
			http.Error(w, `{"kind":"Status","apiVersion":"v1","status":"Failure","reason":"NotFound","code":404}`, http.StatusNotFound)
			return
		}
		w.Header().Set("Content-Type", "application/json")
		_, _ = w.Write([]byte(`{"kind":"Node","apiVersion":"v1","metadata":{"name":"n1"}}`))
	}))
	defer srv.Close()
	m := NewMetrics()
	cfg := &rest.Config{Host: srv.URL}
	m.Instrument(cfg)
	cs, err := kubernetes.NewForConfig(cfg)
	if err != nil {
		t.Fatal(err)
	}
	ctx := context.Background()
	for i := 0; i < 2; i++ {
		if _, err := cs.CoreV1().Nodes().Get(ctx, "n1", metav1.GetOptions{}); err != nil {
			t.Fatal(err)
		}
	}
	_, _ = cs.CoreV1().Nodes().Get(ctx, "gone", metav1.GetOptions{})
	if got := testutil.ToFloat64(m.APIRequests.WithLabelValues("get", "nodes", "200")); got != 2 {
		t.Errorf("get nodes 200: %v", got)
	}
	if got := testutil.ToFloat64(m.APIRequests.WithLabelValues("get", "nodes", "404")); got != 1 {
		t.Errorf("get nodes 404: %v", got)
	}
	srv.Close()
	_, _ = cs.CoreV1().Nodes().Get(ctx, "n1", metav1.GetOptions{})
	if got := testutil.ToFloat64(m.APIRequests.WithLabelValues("get", "nodes", "error")); got < 1 {
		t.Errorf("get nodes error: %v", got)
	}
}
