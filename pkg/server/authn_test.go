package server

import (
	"context"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"net/http"
	"net/http/httptest"
	"strings"
	"sync"
	"testing"
	"time"

	authnv1 "k8s.io/api/authentication/v1"
	authzv1 "k8s.io/api/authorization/v1"
	"k8s.io/apimachinery/pkg/runtime"
	"k8s.io/client-go/kubernetes/fake"
	k8stesting "k8s.io/client-go/testing"

	"github.com/node-doctor/node-doctor/pkg/kube/kubetest"
)

// fakeReviewer knows tokens by name and which users may get /metrics.
type fakeReviewer struct {
	mu      sync.Mutex
	users   map[string]User // token -> user
	allowed map[string]bool // user -> may get /metrics
	err     error
	authn   int
	authz   int
	asked   []string // "verb path" of each Authorize
}

func (f *fakeReviewer) Authenticate(_ context.Context, token string) (User, bool, error) {
	f.mu.Lock()
	defer f.mu.Unlock()
	f.authn++
	if f.err != nil {
		return User{}, false, f.err
	}
	u, ok := f.users[token]
	return u, ok, nil
}

func (f *fakeReviewer) Authorize(_ context.Context, u User, verb, path string) (bool, string, error) {
	f.mu.Lock()
	defer f.mu.Unlock()
	f.authz++
	f.asked = append(f.asked, verb+" "+path)
	return f.allowed[u.Name], "", nil
}

func (f *fakeReviewer) calls() (int, int) {
	f.mu.Lock()
	defer f.mu.Unlock()
	return f.authn, f.authz
}

func newFakeReviewer() *fakeReviewer {
	return &fakeReviewer{
		users: map[string]User{
			"prom-token":  {Name: "system:serviceaccount:monitoring:prometheus"},
			"other-token": {Name: "system:serviceaccount:default:default"},
		},
		allowed: map[string]bool{"system:serviceaccount:monitoring:prometheus": true},
	}
}

func quiet() *slog.Logger { return slog.New(slog.DiscardHandler) }

func serve(t *testing.T, g *guard, header string) (int, string, http.Header) {
	t.Helper()
	r := httptest.NewRequest(http.MethodGet, "/metrics", nil)
	if header != "" {
		r.Header.Set("Authorization", header)
	}
	w := httptest.NewRecorder()
	g.ServeHTTP(w, r)
	b, _ := io.ReadAll(w.Result().Body)
	return w.Code, string(b), w.Result().Header
}

var okHandler = http.HandlerFunc(func(w http.ResponseWriter, _ *http.Request) { fmt.Fprint(w, "the metrics") })

func TestGuard(t *testing.T) {
	cases := []struct {
		name, header string
		code         int
		body         string
		reviews      bool // the API server is asked
	}{
		{"no header", "", 401, "Unauthorized", false},
		{"basic auth", "Basic dXNlcjpwdw==", 401, "Unauthorized", false},
		{"empty bearer", "Bearer ", 401, "Unauthorized", false},
		{"bearer without space", "Bearerprom-token", 401, "Unauthorized", false},
		{"unknown token", "Bearer nope", 401, "Unauthorized", true},
		{"allowed", "Bearer prom-token", 200, "the metrics", true},
		{"scheme case", "bearer prom-token", 200, "the metrics", true},
		{"not allowed", "Bearer other-token", 403, `"system:serviceaccount:default:default" may not get /metrics`, true},
	}
	for _, c := range cases {
		t.Run(c.name, func(t *testing.T) {
			rev := newFakeReviewer()
			g := newGuard(rev, quiet(), okHandler)
			code, body, h := serve(t, g, c.header)
			if code != c.code || !strings.Contains(body, c.body) {
				t.Errorf("got %d %q, want %d with %q", code, body, c.code, c.body)
			}
			if code == 401 && h.Get("WWW-Authenticate") == "" {
				t.Error("401 without WWW-Authenticate")
			}
			if n, _ := rev.calls(); (n > 0) != c.reviews {
				t.Errorf("TokenReviews: %d, want some: %v", n, c.reviews)
			}
			if code == 200 || code == 403 {
				if len(rev.asked) != 1 || rev.asked[0] != "get /metrics" {
					t.Errorf("SubjectAccessReviews asked %v, want [get /metrics]", rev.asked)
				}
			}
		})
	}
}

func TestGuardCache(t *testing.T) {
	rev := newFakeReviewer()
	g := newGuard(rev, quiet(), okHandler)
	now := time.Unix(1_000_000, 0)
	g.now = func() time.Time { return now }

	for range 3 {
		if code, _, _ := serve(t, g, "Bearer prom-token"); code != 200 {
			t.Fatalf("allowed token: %d", code)
		}
	}
	if n, z := rev.calls(); n != 1 || z != 1 {
		t.Fatalf("3 scrapes within the TTL asked %d TokenReviews, %d SARs; want 1, 1", n, z)
	}
	// A permission revoked takes effect once the decision expires.
	rev.allowed = map[string]bool{}
	now = now.Add(allowTTL - time.Second)
	if code, _, _ := serve(t, g, "Bearer prom-token"); code != 200 {
		t.Fatalf("within the TTL: %d", code)
	}
	now = now.Add(2 * time.Second)
	if code, _, _ := serve(t, g, "Bearer prom-token"); code != 403 {
		t.Fatalf("after the TTL, revoked: %d, want 403", code)
	}
	// Denials last less long.
	rev.allowed = map[string]bool{"system:serviceaccount:monitoring:prometheus": true}
	now = now.Add(denyTTL + time.Second)
	if code, _, _ := serve(t, g, "Bearer prom-token"); code != 200 {
		t.Fatalf("after the deny TTL, granted again: %d, want 200", code)
	}
	// A bad token is also cached, briefly: a flood of it costs one review.
	before, _ := rev.calls()
	for range 5 {
		serve(t, g, "Bearer nope")
	}
	if n, _ := rev.calls(); n != before+1 {
		t.Errorf("5 requests with one bad token asked %d TokenReviews, want 1", n-before)
	}
}

func TestGuardErrorsNotCached(t *testing.T) {
	rev := newFakeReviewer()
	rev.err = errors.New("connection refused")
	g := newGuard(rev, quiet(), okHandler)
	if code, body, _ := serve(t, g, "Bearer prom-token"); code != http.StatusServiceUnavailable || strings.Contains(body, "the metrics") {
		t.Fatalf("API down: %d %q, want 503", code, body)
	}
	rev.err = nil
	if code, _, _ := serve(t, g, "Bearer prom-token"); code != 200 {
		t.Fatalf("API back: %d, want 200 (an error must not be cached)", code)
	}
}

func TestGuardCacheBounded(t *testing.T) {
	rev := newFakeReviewer()
	g := newGuard(rev, quiet(), okHandler)
	for i := range maxDecisions*2 + 7 {
		serve(t, g, fmt.Sprintf("Bearer random-%d", i))
		if len(g.cache) > maxDecisions {
			t.Fatalf("cache holds %d decisions, more than %d", len(g.cache), maxDecisions)
		}
	}
	// The scraper's decision is made again after such a flood, not lost.
	if code, _, _ := serve(t, g, "Bearer prom-token"); code != 200 {
		t.Fatalf("after a flood: %d", code)
	}
}

func TestKubeReviewer(t *testing.T) {
	cs := fake.NewClientset()
	var sar *authzv1.SubjectAccessReview
	cs.PrependReactor("create", "tokenreviews", func(a k8stesting.Action) (bool, runtime.Object, error) {
		tr := a.(k8stesting.CreateAction).GetObject().(*authnv1.TokenReview)
		switch tr.Spec.Token {
		case "good":
			tr.Status = authnv1.TokenReviewStatus{Authenticated: true, User: authnv1.UserInfo{
				Username: "system:serviceaccount:monitoring:prometheus", UID: "u-1",
				Groups: []string{"system:serviceaccounts", "system:authenticated"},
				Extra:  map[string]authnv1.ExtraValue{"authentication.kubernetes.io/pod-name": {"prometheus-0"}},
			}}
		case "broken":
			return true, nil, errors.New("etcdserver: request timed out")
		default:
			tr.Status = authnv1.TokenReviewStatus{Error: "invalid bearer token"}
		}
		return true, tr, nil
	})
	cs.PrependReactor("create", "subjectaccessreviews", func(a k8stesting.Action) (bool, runtime.Object, error) {
		sar = a.(k8stesting.CreateAction).GetObject().(*authzv1.SubjectAccessReview)
		sar.Status.Allowed = sar.Spec.User == "system:serviceaccount:monitoring:prometheus"
		// An allow together with an explicit deny is a deny.
		sar.Status.Denied = sar.Spec.UID == "denied"
		return true, sar, nil
	})
	k := KubeReviewer{Client: kubetest.Adapt(cs)}
	ctx := context.Background()

	if _, ok, err := k.Authenticate(ctx, "bad"); ok || err != nil {
		t.Errorf("bad token: ok=%v err=%v, want not ok, no error", ok, err)
	}
	if _, _, err := k.Authenticate(ctx, "broken"); err == nil || !strings.Contains(err.Error(), "tokenreview") {
		t.Errorf("API error: %v, want a tokenreview error", err)
	}
	u, ok, err := k.Authenticate(ctx, "good")
	if !ok || err != nil || u.Name != "system:serviceaccount:monitoring:prometheus" || len(u.Groups) != 2 {
		t.Fatalf("good token: %+v %v %v", u, ok, err)
	}
	allowed, _, err := k.Authorize(ctx, u, "get", "/metrics")
	if !allowed || err != nil {
		t.Fatalf("authorize: %v %v", allowed, err)
	}
	s := sar.Spec
	if s.NonResourceAttributes == nil || s.NonResourceAttributes.Path != "/metrics" || s.NonResourceAttributes.Verb != "get" ||
		s.ResourceAttributes != nil || s.UID != "u-1" || len(s.Groups) != 2 || s.Extra["authentication.kubernetes.io/pod-name"][0] != "prometheus-0" {
		t.Errorf("SubjectAccessReview spec = %+v", s)
	}
	u.UID = "denied"
	if allowed, _, _ := k.Authorize(ctx, u, "get", "/metrics"); allowed {
		t.Error("allowed and denied at once counted as allowed")
	}
	if allowed, _, _ := k.Authorize(ctx, User{Name: "someone"}, "get", "/metrics"); allowed {
		t.Error("another user allowed")
	}
}
