package kubeapi

import (
	"context"
	"encoding/json"
	"io"
	"net/http"
	"net/http/httptest"
	"sync"
	"testing"

	authorizationv1 "k8s.io/api/authorization/v1"
	corev1 "k8s.io/api/core/v1"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/types"
	"k8s.io/client-go/rest"
)

type request struct {
	method, path, query, contentType, body string
}

// server answers every request with reply and records it.
func server(t *testing.T, reply any) (*Clientset, *[]request) {
	t.Helper()
	var mu sync.Mutex
	var got []request
	srv := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		b, _ := io.ReadAll(r.Body)
		mu.Lock()
		got = append(got, request{r.Method, r.URL.Path, r.URL.RawQuery, r.Header.Get("Content-Type"), string(b)})
		mu.Unlock()
		w.Header().Set("Content-Type", "application/json")
		_ = json.NewEncoder(w).Encode(reply)
	}))
	t.Cleanup(srv.Close)
	cs, err := NewClientset(&rest.Config{Host: srv.URL, QPS: 50, Burst: 100})
	if err != nil {
		t.Fatal(err)
	}
	return cs, &got
}

func TestRequests(t *testing.T) {
	ctx := context.Background()
	cs, got := server(t, map[string]any{"apiVersion": "v1", "kind": "Service", "metadata": map[string]any{"name": "web", "namespace": "shop"}})
	svc, err := cs.Services("shop").Get(ctx, "web", metav1.GetOptions{})
	if err != nil || svc.Name != "web" || svc.Namespace != "shop" {
		t.Fatalf("get: %v %+v", err, svc)
	}
	if _, err := cs.EndpointSlices("").List(ctx, metav1.ListOptions{LabelSelector: "a=b", Limit: 500}); err != nil {
		t.Fatal(err)
	}
	if _, err := cs.Nodes().PatchStatus(ctx, "n1", []byte(`{"status":{}}`)); err != nil {
		t.Fatal(err)
	}
	if _, err := cs.Events("default").Patch(ctx, "e1", types.MergePatchType, []byte(`{}`), metav1.PatchOptions{}); err != nil {
		t.Fatal(err)
	}
	if _, err := cs.Events("default").Create(ctx, &corev1.Event{ObjectMeta: metav1.ObjectMeta{Name: "e2"}}, metav1.CreateOptions{}); err != nil {
		t.Fatal(err)
	}
	if _, err := cs.SubjectAccessReviews().Create(ctx, &authorizationv1.SubjectAccessReview{}, metav1.CreateOptions{}); err != nil {
		t.Fatal(err)
	}
	want := []request{
		{method: "GET", path: "/api/v1/namespaces/shop/services/web"},
		{method: "GET", path: "/apis/discovery.k8s.io/v1/endpointslices", query: "labelSelector=a%3Db&limit=500"},
		{method: "PATCH", path: "/api/v1/nodes/n1/status", contentType: "application/strategic-merge-patch+json", body: `{"status":{}}`},
		{method: "PATCH", path: "/api/v1/namespaces/default/events/e1", contentType: "application/merge-patch+json", body: `{}`},
		{method: "POST", path: "/api/v1/namespaces/default/events"},
		{method: "POST", path: "/apis/authorization.k8s.io/v1/subjectaccessreviews"},
	}
	if len(*got) != len(want) {
		t.Fatalf("%d requests, want %d: %+v", len(*got), len(want), *got)
	}
	for i, w := range want {
		g := (*got)[i]
		if g.method != w.method || g.path != w.path || (w.query != "" && g.query != w.query) ||
			(w.contentType != "" && g.contentType != w.contentType) || (w.body != "" && g.body != w.body) {
			t.Errorf("request %d: %+v, want %+v", i, g, w)
		}
	}
	// Created objects are sent as JSON of their kind.
	var ev map[string]any
	if err := json.Unmarshal([]byte((*got)[4].body), &ev); err != nil || ev["kind"] != "Event" || ev["apiVersion"] != "v1" {
		t.Errorf("event body %s: %v", (*got)[4].body, err)
	}
}

func TestBurstRequiredWithQPS(t *testing.T) {
	if _, err := NewClientset(&rest.Config{Host: "https://127.0.0.1:1", QPS: 5}); err == nil {
		t.Error("QPS without burst accepted")
	}
}
