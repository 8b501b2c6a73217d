package server

import (
	"context"
	"crypto/tls"
	"crypto/x509"
	"encoding/pem"
	"errors"
	"io"
	"net/http"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/prometheus/client_golang/prometheus"
	"github.com/prometheus/client_golang/prometheus/testutil"
)

func start(t *testing.T, o Options) (*Server, *prometheus.Registry) {
	t.Helper()
	reg := prometheus.NewRegistry()
	reg.MustRegister(prometheus.NewGauge(prometheus.GaugeOpts{Name: "node_doctor_test_up", Help: "test"}))
	s, err := Listen(o, reg, func() error { return nil }, func() error { return errors.New("not ready yet") }, quiet())
	if err != nil {
		t.Fatal(err)
	}
	ctx, cancel := context.WithCancel(context.Background())
	done := make(chan error, 1)
	go func() { done <- s.Serve(ctx) }()
	t.Cleanup(func() {
		cancel()
		if err := <-done; err != nil {
			t.Errorf("serve: %v", err)
		}
	})
	return s, reg
}

func get(t *testing.T, c *http.Client, url, token string) (int, string, *http.Response) {
	t.Helper()
	req, _ := http.NewRequest(http.MethodGet, url, nil)
	if token != "" {
		req.Header.Set("Authorization", "Bearer "+token)
	}
	resp, err := c.Do(req)
	if err != nil {
		t.Fatalf("GET %s: %v", url, err)
	}
	defer resp.Body.Close()
	b, _ := io.ReadAll(resp.Body)
	return resp.StatusCode, string(b), resp
}

func TestListenPlain(t *testing.T) {
	s, _ := start(t, Options{MetricsAddress: "127.0.0.1:0"})
	base := "http://" + s.Addr()
	if code, body, _ := get(t, http.DefaultClient, base+"/metrics", ""); code != 200 || !strings.Contains(body, "node_doctor_test_up") {
		t.Errorf("/metrics: %d %q", code, body)
	}
	if code, _, _ := get(t, http.DefaultClient, base+"/healthz", ""); code != 200 {
		t.Errorf("/healthz: %d", code)
	}
	if code, body, _ := get(t, http.DefaultClient, base+"/readyz", ""); code != 503 || !strings.Contains(body, "not ready yet") {
		t.Errorf("/readyz: %d %q", code, body)
	}
	if s.Secure() {
		t.Error("plain server says it is secure")
	}
}

func TestListenPlainHealthAddress(t *testing.T) {
	s, _ := start(t, Options{MetricsAddress: "127.0.0.1:0", HealthAddress: "127.0.0.1:0"})
	if s.Addr() == s.HealthAddr() {
		t.Fatal("one address for both")
	}
	if code, _, _ := get(t, http.DefaultClient, "http://"+s.HealthAddr()+"/healthz", ""); code != 200 {
		t.Errorf("health address /healthz: %d", code)
	}
	if code, _, _ := get(t, http.DefaultClient, "http://"+s.HealthAddr()+"/metrics", ""); code != 404 {
		t.Errorf("health address /metrics: %d, want 404", code)
	}
}

func TestListenSecure(t *testing.T) {
	s, reg := start(t, Options{MetricsAddress: "127.0.0.1:0", HealthAddress: "127.0.0.1:0", Secure: true, Reviewer: newFakeReviewer()})
	if !s.Secure() {
		t.Error("secure server says it is not")
	}
	tr := &http.Transport{TLSClientConfig: &tls.Config{InsecureSkipVerify: true}, ForceAttemptHTTP2: true}
	c := &http.Client{Transport: tr}
	base := "https://" + s.Addr()

	if code, _, _ := get(t, c, base+"/metrics", ""); code != 401 {
		t.Errorf("no token: %d, want 401", code)
	}
	if code, _, _ := get(t, c, base+"/metrics", "nope"); code != 401 {
		t.Errorf("bad token: %d, want 401", code)
	}
	if code, _, _ := get(t, c, base+"/metrics", "other-token"); code != 403 {
		t.Errorf("token without the permission: %d, want 403", code)
	}
	code, body, resp := get(t, c, base+"/metrics", "prom-token")
	if code != 200 || !strings.Contains(body, "node_doctor_test_up") {
		t.Errorf("allowed token: %d %q", code, body)
	}
	for _, want := range []string{
		`node_doctor_metrics_auth_requests_total{result="allowed"} 1`,
		`node_doctor_metrics_auth_requests_total{result="unauthenticated"} 2`,
		`node_doctor_metrics_auth_requests_total{result="forbidden"} 1`,
		`node_doctor_metrics_auth_requests_total{result="error"} 0`,
	} {
		if !strings.Contains(body, want) {
			t.Errorf("/metrics lacks %s", want)
		}
	}
	if probs, err := testutil.GatherAndLint(reg); err != nil || len(probs) > 0 {
		t.Errorf("promlint: %v %v", probs, err)
	}
	if resp.Proto != "HTTP/1.1" {
		t.Errorf("negotiated %s, want HTTP/1.1 only", resp.Proto)
	}
	cert := resp.TLS.PeerCertificates[0]
	if cert.Subject.CommonName != "node-doctor" || len(cert.IPAddresses) == 0 {
		t.Errorf("serving certificate %v, IPs %v", cert.Subject, cert.IPAddresses)
	}
	// Nothing else on the metrics port: the probes are not there.
	if code, _, _ := get(t, c, base+"/healthz", "prom-token"); code != 404 {
		t.Errorf("/healthz on the metrics port: %d, want 404", code)
	}
	// Plain HTTP to the TLS port is refused.
	if code, _, _ := get(t, http.DefaultClient, "http://"+s.Addr()+"/metrics", ""); code != 400 {
		t.Errorf("plain HTTP to the https port: %d, want 400", code)
	}
	// The probes, plain, without a token.
	if code, _, _ := get(t, http.DefaultClient, "http://"+s.HealthAddr()+"/healthz", ""); code != 200 {
		t.Errorf("/healthz: %d", code)
	}
	if code, _, _ := get(t, http.DefaultClient, "http://"+s.HealthAddr()+"/readyz", ""); code != 503 {
		t.Errorf("/readyz: %d", code)
	}
	if code, _, _ := get(t, http.DefaultClient, "http://"+s.HealthAddr()+"/metrics", ""); code != 404 {
		t.Errorf("/metrics on the health port: %d, want 404", code)
	}
}

func TestListenSecureNeeds(t *testing.T) {
	reg := prometheus.NewRegistry()
	ok := func() error { return nil }
	if _, err := Listen(Options{MetricsAddress: "127.0.0.1:0", HealthAddress: "127.0.0.1:0", Secure: true}, reg, ok, ok, quiet()); err == nil ||
		!strings.Contains(err.Error(), "need a Kubernetes API") {
		t.Errorf("secure without a reviewer: %v", err)
	}
	if _, err := Listen(Options{MetricsAddress: "127.0.0.1:0", Secure: true, Reviewer: newFakeReviewer()}, reg, ok, ok, quiet()); err == nil ||
		!strings.Contains(err.Error(), "health address") {
		t.Errorf("secure without a health address: %v", err)
	}
	if _, err := Listen(Options{MetricsAddress: "127.0.0.1:0", HealthAddress: "127.0.0.1:0", Secure: true, Reviewer: newFakeReviewer(),
		TLSCertFile: "/nonexistent/tls.crt", TLSKeyFile: "/nonexistent/tls.key"}, reg, ok, ok, quiet()); err == nil ||
		!strings.Contains(err.Error(), "/nonexistent/tls.crt") {
		t.Errorf("missing certificate files: %v", err)
	}
}

func TestSelfSigned(t *testing.T) {
	now := time.Date(2026, 12, 7, 12, 0, 0, 0, time.UTC)
	c, err := selfSigned([]string{"node-1", "localhost", "127.0.0.1", "::1", ""}, now)
	if err != nil {
		t.Fatal(err)
	}
	x, err := x509.ParseCertificate(c.Certificate[0])
	if err != nil {
		t.Fatal(err)
	}
	if strings.Join(x.DNSNames, ",") != "node-1,localhost" || len(x.IPAddresses) != 2 {
		t.Errorf("names %v, IPs %v", x.DNSNames, x.IPAddresses)
	}
	if x.IsCA || len(x.ExtKeyUsage) != 1 || x.ExtKeyUsage[0] != x509.ExtKeyUsageServerAuth {
		t.Errorf("usage: CA %v, ext %v", x.IsCA, x.ExtKeyUsage)
	}
	if !x.NotBefore.Before(now) || !x.NotAfter.After(now.Add(365*24*time.Hour)) {
		t.Errorf("validity %s to %s", x.NotBefore, x.NotAfter)
	}
	if err := x.VerifyHostname("node-1"); err != nil {
		t.Error(err)
	}
	// Each start makes its own key.
	c2, _ := selfSigned([]string{"node-1"}, now)
	if string(c2.Certificate[0]) == string(c.Certificate[0]) {
		t.Error("two certificates alike")
	}
}

func writePair(t *testing.T, dir, name string, mtime time.Time) {
	t.Helper()
	c, err := selfSigned([]string{name}, time.Now())
	if err != nil {
		t.Fatal(err)
	}
	key, err := x509.MarshalPKCS8PrivateKey(c.PrivateKey)
	if err != nil {
		t.Fatal(err)
	}
	files := map[string][]byte{
		"tls.crt": pem.EncodeToMemory(&pem.Block{Type: "CERTIFICATE", Bytes: c.Certificate[0]}),
		"tls.key": pem.EncodeToMemory(&pem.Block{Type: "PRIVATE KEY", Bytes: key}),
	}
	for f, b := range files {
		p := filepath.Join(dir, f)
		if err := os.WriteFile(p, b, 0o600); err != nil {
			t.Fatal(err)
		}
		if err := os.Chtimes(p, mtime, mtime); err != nil {
			t.Fatal(err)
		}
	}
}

func dnsName(t *testing.T, c *tls.Certificate) string {
	t.Helper()
	x, err := x509.ParseCertificate(c.Certificate[0])
	if err != nil {
		t.Fatal(err)
	}
	return x.DNSNames[0]
}

func TestFileCertReload(t *testing.T) {
	dir := t.TempDir()
	t0 := time.Now().Add(-time.Hour)
	writePair(t, dir, "first", t0)
	var reloadErrs []error
	f, err := loadFileCert(filepath.Join(dir, "tls.crt"), filepath.Join(dir, "tls.key"), func(err error) { reloadErrs = append(reloadErrs, err) })
	if err != nil {
		t.Fatal(err)
	}
	now := time.Now()
	f.now = func() time.Time { return now }
	c, _ := f.get(nil)
	if dnsName(t, c) != "first" {
		t.Fatalf("serving %s", dnsName(t, c))
	}

	writePair(t, dir, "second", t0.Add(time.Minute))
	if c, _ := f.get(nil); dnsName(t, c) != "first" {
		t.Error("files read again before the check interval")
	}
	now = now.Add(5 * time.Second)
	if c, _ := f.get(nil); dnsName(t, c) != "second" {
		t.Errorf("after a change: serving %s, want second", dnsName(t, c))
	}

	// Halfway through an update (a key that does not match): the previous
	// pair stays, and the error is reported.
	writePair(t, dir, "third", t0.Add(2*time.Minute))
	if err := os.WriteFile(filepath.Join(dir, "tls.key"), []byte("garbage"), 0o600); err != nil {
		t.Fatal(err)
	}
	now = now.Add(5 * time.Second)
	if c, _ := f.get(nil); dnsName(t, c) != "second" {
		t.Errorf("bad pair: serving %s, want second kept", dnsName(t, c))
	}
	if len(reloadErrs) != 1 {
		t.Errorf("reload errors %v, want one", reloadErrs)
	}
	// Once whole again, it is taken.
	writePair(t, dir, "fourth", t0.Add(3*time.Minute))
	now = now.Add(5 * time.Second)
	if c, _ := f.get(nil); dnsName(t, c) != "fourth" {
		t.Errorf("fixed pair: serving %s, want fourth", dnsName(t, c))
	}
}

// --profiling serves Go's profiles, gzipped protobuf as go tool pprof reads
// them; behind the guard with --metrics-secure; nowhere without it.
func TestProfiling(t *testing.T) {
	plain, _ := start(t, Options{MetricsAddress: "127.0.0.1:0"})
	if code, _, _ := get(t, http.DefaultClient, "http://"+plain.Addr()+"/debug/pprof/heap", ""); code != 404 {
		t.Errorf("without Profiling: %d, want 404", code)
	}
	s, _ := start(t, Options{MetricsAddress: "127.0.0.1:0", Profiling: true})
	base := "http://" + s.Addr() + "/debug/pprof/"
	for _, p := range []string{"heap?gc=1", "allocs", "goroutine", "profile?seconds=1"} {
		if code, body, _ := get(t, http.DefaultClient, base+p, ""); code != 200 || !strings.HasPrefix(body, "\x1f\x8b") {
			t.Errorf("%s: %d, %d bytes, want a gzipped profile", p, code, len(body))
		}
	}
	for p, want := range map[string]int{"nosuch": 404, "profile?seconds=0": 400, "profile?seconds=x": 400, "profile?seconds=3600": 400} {
		if code, _, _ := get(t, http.DefaultClient, base+p, ""); code != want {
			t.Errorf("%s: %d, want %d", p, code, want)
		}
	}
	sec, _ := start(t, Options{MetricsAddress: "127.0.0.1:0", HealthAddress: "127.0.0.1:0", Secure: true, Reviewer: newFakeReviewer(), Profiling: true})
	c := &http.Client{Transport: &http.Transport{TLSClientConfig: &tls.Config{InsecureSkipVerify: true}}}
	if code, _, _ := get(t, c, "https://"+sec.Addr()+"/debug/pprof/heap", ""); code != 401 {
		t.Errorf("secure, no token: %d, want 401", code)
	}
	if code, body, _ := get(t, c, "https://"+sec.Addr()+"/debug/pprof/heap", "prom-token"); code != 200 || !strings.HasPrefix(body, "\x1f\x8b") {
		t.Errorf("secure, allowed: %d", code)
	}
	if code, body, _ := get(t, c, "https://"+sec.Addr()+"/metrics", "prom-token"); code != 200 || !strings.Contains(body, "node_doctor_test_up") {
		t.Errorf("secure /metrics with profiling: %d", code)
	}
}
