//go:build e2e

package e2e

import (
	"context"
	"crypto/tls"
	"fmt"
	"io"
	"net"
	"net/http"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"

	authnv1 "k8s.io/api/authentication/v1"
	corev1 "k8s.io/api/core/v1"
	rbacv1 "k8s.io/api/rbac/v1"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"

	"github.com/node-doctor/node-doctor/test/harness"
)

// scraperToken creates ServiceAccount name in the agent's namespace, binds
// it to deploy/'s node-doctor-metrics-reader ClusterRole when allowed, and
// returns a token for it (TokenRequest, as a projected token would be).
func scraperToken(ctx context.Context, t *testing.T, c *harness.Cluster, name string, allowed bool) string {
	t.Helper()
	sa, err := c.Client.CoreV1().ServiceAccounts(deployNS).Create(ctx, &corev1.ServiceAccount{ObjectMeta: metav1.ObjectMeta{Name: name}}, metav1.CreateOptions{})
	if err != nil {
		t.Fatalf("service account %s: %v", name, err)
	}
	if allowed {
		crb := &rbacv1.ClusterRoleBinding{
			ObjectMeta: metav1.ObjectMeta{Name: "e2e-" + name},
			RoleRef:    rbacv1.RoleRef{APIGroup: "rbac.authorization.k8s.io", Kind: "ClusterRole", Name: "node-doctor-metrics-reader"},
			Subjects:   []rbacv1.Subject{{Kind: "ServiceAccount", Name: name, Namespace: deployNS}},
		}
		if _, err := c.Client.RbacV1().ClusterRoleBindings().Create(ctx, crb, metav1.CreateOptions{}); err != nil {
			t.Fatalf("bind %s: %v", name, err)
		}
		t.Cleanup(func() {
			_ = c.Client.RbacV1().ClusterRoleBindings().Delete(context.Background(), crb.Name, metav1.DeleteOptions{})
		})
	}
	hour := int64(3600)
	tr, err := c.Client.CoreV1().ServiceAccounts(deployNS).CreateToken(ctx, sa.Name,
		&authnv1.TokenRequest{Spec: authnv1.TokenRequestSpec{ExpirationSeconds: &hour}}, metav1.CreateOptions{})
	if err != nil {
		t.Fatalf("token for %s: %v", name, err)
	}
	return tr.Status.Token
}

// insecureTLS trusts any certificate: the agent's is self-signed, made in
// memory at its start, as a scraper sees it.
var insecureTLS = &http.Client{
	Timeout:   15 * time.Second,
	Transport: &http.Transport{TLSClientConfig: &tls.Config{InsecureSkipVerify: true}},
}

// scrape GETs url with token as bearer (none if empty).
func scrape(ctx context.Context, cl *http.Client, url, token string) (int, string, error) {
	req, err := http.NewRequestWithContext(ctx, http.MethodGet, url, nil)
	if err != nil {
		return 0, "", err
	}
	if token != "" {
		req.Header.Set("Authorization", "Bearer "+token)
	}
	resp, err := cl.Do(req)
	if err != nil {
		return 0, "", err
	}
	defer resp.Body.Close()
	b, err := io.ReadAll(io.LimitReader(resp.Body, 8<<20))
	return resp.StatusCode, string(b), err
}

// checkSecureMetrics shows, against the real API server, who may read the
// deployed agent's /metrics on the node's IP: nobody without a token or with
// a made-up one (401), not a ServiceAccount without the reader role (403),
// the one bound to it (200); plain HTTP gets nothing, and the probes answer
// plain on their own port. It returns a token file for Prometheus.
func checkSecureMetrics(ctx context.Context, t *testing.T, c *harness.Cluster) string {
	t.Helper()
	good := scraperToken(ctx, t, c, "scraper", true)
	nobody := scraperToken(ctx, t, c, "nobody", false)
	hp := net.JoinHostPort(c.NodeIP, "19720")
	url := "https://" + hp + "/metrics"

	// The allowed scraper first: RBAC's cache may take a moment to see the
	// new binding (and a decision is cached only briefly).
	waitFor(t, "the reader-bound token scraping /metrics", time.Minute, func() (bool, string) {
		code, body, err := scrape(ctx, insecureTLS, url, good)
		if err != nil {
			return false, err.Error()
		}
		return code == 200 && strings.Contains(body, "node_doctor_check_status{"), fmt.Sprintf("%d %.200s", code, body)
	})
	t.Logf("GET %s with the node-doctor-metrics-reader token: 200 with node_doctor_check_status", url)
	for _, tc := range []struct {
		what, token string
		code        int
	}{
		{"no token", "", http.StatusUnauthorized},
		{"a made-up token", "not-a-token", http.StatusUnauthorized},
		{"a token without the reader role", nobody, http.StatusForbidden},
	} {
		code, body, err := scrape(ctx, insecureTLS, url, tc.token)
		if err != nil {
			t.Errorf("GET %s with %s: %v", url, tc.what, err)
			continue
		}
		if code != tc.code || strings.Contains(body, "node_doctor_") {
			t.Errorf("GET %s with %s: %d %.300q, want %d and no metrics", url, tc.what, code, body, tc.code)
			continue
		}
		t.Logf("GET %s with %s: %d %s", url, tc.what, code, strings.TrimSpace(body))
	}
	// Go's TLS server answers 400 and hangs up, so reading the body may end
	// in a reset: the status is what counts.
	if code, body, err := scrape(ctx, http.DefaultClient, "http://"+hp+"/metrics", good); code != http.StatusBadRequest || strings.Contains(body, "node_doctor_") {
		t.Errorf("plain HTTP to the metrics port: %d %.200q %v, want 400 and no metrics", code, body, err)
	} else {
		t.Logf("plain HTTP to the metrics port: %d %s", code, strings.TrimSpace(body))
	}
	health := "http://" + net.JoinHostPort(c.NodeIP, "19721")
	if code, body, err := scrape(ctx, http.DefaultClient, health+"/healthz", ""); err != nil || code != 200 {
		t.Errorf("GET %s/healthz: %d %q %v", health, code, body, err)
	}
	if code, _, err := scrape(ctx, http.DefaultClient, health+"/metrics", good); err != nil || code != http.StatusNotFound {
		t.Errorf("GET %s/metrics: %d %v, want 404", health, code, err)
	}
	f := filepath.Join(t.TempDir(), "scraper.token")
	if err := os.WriteFile(f, []byte(good), 0o600); err != nil {
		t.Fatal(err)
	}
	return f
}
