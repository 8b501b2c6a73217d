package server

import (
	"context"
	"crypto/sha256"
	"errors"
	"fmt"
	"log/slog"
	"net/http"
	"strings"
	"sync"
	"time"

	"github.com/prometheus/client_golang/prometheus"
	authnv1 "k8s.io/api/authentication/v1"
	authzv1 "k8s.io/api/authorization/v1"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"

	"github.com/node-doctor/node-doctor/pkg/kube/kubeapi"
)

// User is who a bearer token belongs to, as TokenReview says.
type User struct {
	Name   string
	UID    string
	Groups []string
	Extra  map[string][]string
}

// Reviewer asks the API server who a token is and what it may do.
type Reviewer interface {
	// Authenticate returns ok=false for a token the API server does not
	// accept; err only when it could not be asked.
	Authenticate(ctx context.Context, token string) (u User, ok bool, err error)
	// Authorize says whether u may use verb on the non-resource URL path.
	Authorize(ctx context.Context, u User, verb, path string) (allowed bool, reason string, err error)
}

// ReviewClient is the part of the API a KubeReviewer uses.
type ReviewClient interface {
	TokenReviews() kubeapi.Creator[*authnv1.TokenReview]
	SubjectAccessReviews() kubeapi.Creator[*authzv1.SubjectAccessReview]
}

// KubeReviewer is a Reviewer over TokenReview and SubjectAccessReview.
type KubeReviewer struct {
	Client ReviewClient
}

// Authenticate creates a TokenReview.
func (k KubeReviewer) Authenticate(ctx context.Context, token string) (User, bool, error) {
	r, err := k.Client.TokenReviews().Create(ctx,
		&authnv1.TokenReview{Spec: authnv1.TokenReviewSpec{Token: token}}, metav1.CreateOptions{})
	if err != nil {
		return User{}, false, fmt.Errorf("tokenreview: %w", err)
	}
	if !r.Status.Authenticated {
		return User{}, false, nil
	}
	u := User{Name: r.Status.User.Username, UID: r.Status.User.UID, Groups: r.Status.User.Groups}
	if len(r.Status.User.Extra) > 0 {
		u.Extra = map[string][]string{}
		for k, v := range r.Status.User.Extra {
			u.Extra[k] = v
		}
	}
	return u, true, nil
}

// Authorize creates a SubjectAccessReview for a non-resource URL.
func (k KubeReviewer) Authorize(ctx context.Context, u User, verb, path string) (bool, string, error) {
	extra := map[string]authzv1.ExtraValue{}
	for k, v := range u.Extra {
		extra[k] = v
	}
	r, err := k.Client.SubjectAccessReviews().Create(ctx, &authzv1.SubjectAccessReview{
		Spec: authzv1.SubjectAccessReviewSpec{
			User: u.Name, UID: u.UID, Groups: u.Groups, Extra: extra,
			NonResourceAttributes: &authzv1.NonResourceAttributes{Path: path, Verb: verb},
		},
	}, metav1.CreateOptions{})
	if err != nil {
		return false, "", fmt.Errorf("subjectaccessreview: %w", err)
	}
	return r.Status.Allowed && !r.Status.Denied, r.Status.Reason, nil
}

// Cache lifetimes and size: a 30 s scrape costs no API call while its
// decision lasts; a revoked permission or token stops working within a
// minute.
const (
	allowTTL     = time.Minute
	denyTTL      = 10 * time.Second
	maxDecisions = 1024
)

type decision struct {
	status  int // http.StatusOK, StatusUnauthorized or StatusForbidden
	user    string
	expires time.Time
}

// guard authenticates and authorizes requests before they reach next.
type guard struct {
	rev  Reviewer
	log  *slog.Logger
	now  func() time.Time
	next http.Handler

	// results counts requests by outcome: allowed, unauthenticated,
	// forbidden, error.
	results *prometheus.CounterVec

	mu    sync.Mutex
	cache map[[sha256.Size]byte]decision
}

func newGuard(rev Reviewer, log *slog.Logger, next http.Handler) *guard {
	g := &guard{rev: rev, log: log, now: time.Now, next: next, cache: map[[sha256.Size]byte]decision{},
		results: prometheus.NewCounterVec(prometheus.CounterOpts{
			Name: "node_doctor_metrics_auth_requests_total",
			Help: "Requests to the secure /metrics by outcome: allowed, unauthenticated (401), forbidden (403), error (the API server could not be asked).",
		}, []string{"result"})}
	for _, r := range []string{"allowed", "unauthenticated", "forbidden", "error"} {
		g.results.WithLabelValues(r)
	}
	return g
}

var errAuth = errors.New("authentication or authorization is unavailable")

func (g *guard) ServeHTTP(w http.ResponseWriter, r *http.Request) {
	token, ok := bearer(r.Header.Get("Authorization"))
	if !ok {
		g.results.WithLabelValues("unauthenticated").Inc()
		w.Header().Set("WWW-Authenticate", `Bearer realm="node-doctor"`)
		http.Error(w, "Unauthorized", http.StatusUnauthorized)
		return
	}
	verb := strings.ToLower(r.Method)
	if verb == "head" {
		verb = "get"
	}
	d, err := g.decide(r.Context(), token, verb, r.URL.Path)
	if err != nil {
		g.results.WithLabelValues("error").Inc()
		g.log.Warn("metrics request not checked", "err", err)
		http.Error(w, errAuth.Error(), http.StatusServiceUnavailable)
		return
	}
	switch d.status {
	case http.StatusOK:
		g.results.WithLabelValues("allowed").Inc()
		g.next.ServeHTTP(w, r)
	case http.StatusUnauthorized:
		g.results.WithLabelValues("unauthenticated").Inc()
		g.log.Debug("metrics request refused: token not accepted", "remote", r.RemoteAddr)
		w.Header().Set("WWW-Authenticate", `Bearer realm="node-doctor"`)
		http.Error(w, "Unauthorized", http.StatusUnauthorized)
	default:
		g.results.WithLabelValues("forbidden").Inc()
		g.log.Debug("metrics request refused: not allowed", "user", d.user, "remote", r.RemoteAddr)
		http.Error(w, fmt.Sprintf("Forbidden: %q may not %s %s", d.user, verb, r.URL.Path), http.StatusForbidden)
	}
}

// decide returns the cached decision for token, verb and path, or asks.
// Errors are not cached: the next scrape asks again.
func (g *guard) decide(ctx context.Context, token, verb, path string) (decision, error) {
	key := sha256.Sum256([]byte(verb + " " + path + " " + token))
	now := g.now()
	g.mu.Lock()
	d, ok := g.cache[key]
	g.mu.Unlock()
	if ok && now.Before(d.expires) {
		return d, nil
	}
	ctx, cancel := context.WithTimeout(ctx, 10*time.Second)
	defer cancel()
	u, authed, err := g.rev.Authenticate(ctx, token)
	if err != nil {
		return decision{}, err
	}
	switch {
	case !authed:
		d = decision{status: http.StatusUnauthorized, expires: now.Add(denyTTL)}
	default:
		allowed, _, err := g.rev.Authorize(ctx, u, verb, path)
		if err != nil {
			return decision{}, err
		}
		if allowed {
			d = decision{status: http.StatusOK, user: u.Name, expires: now.Add(allowTTL)}
		} else {
			d = decision{status: http.StatusForbidden, user: u.Name, expires: now.Add(denyTTL)}
		}
	}
	g.mu.Lock()
	defer g.mu.Unlock()
	if len(g.cache) >= maxDecisions {
		for k, v := range g.cache {
			if !now.Before(v.expires) {
				delete(g.cache, k)
			}
		}
		// Still full: many live tokens at once, which a scraper never has.
		if len(g.cache) >= maxDecisions {
			clear(g.cache)
		}
	}
	g.cache[key] = d
	return d, nil
}

// bearer takes the token out of an Authorization header.
func bearer(h string) (string, bool) {
	scheme, token, ok := strings.Cut(h, " ")
	if !ok || !strings.EqualFold(scheme, "Bearer") {
		return "", false
	}
	token = strings.TrimSpace(token)
	return token, token != ""
}
