package main

import (
	"bytes"
	"context"
	"fmt"
	"net/http"
	"net/http/httptest"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"sync"
	"syscall"
	"testing"
	"time"
)

// TestTokenNeverLogged runs the agent at debug level against an API server
// that refuses everything, so client-go's errors, retries and the reporters'
// failures are all logged (client-go sends a token only over TLS), and asserts the bearer token it sent (from the
// kubeconfig, and from a token file as in a pod) appears in no output.
func TestTokenNeverLogged(t *testing.T) {
	const token = "nd-secret-token-5b1f0c9e7d2a4e68" //nolint:gosec // test value
	var mu sync.Mutex
	sent := 0
	api := httptest.NewTLSServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		mu.Lock()
		if r.Header.Get("Authorization") == "Bearer "+token {
			sent++
		}
		mu.Unlock()
		w.Header().Set("Content-Type", "application/json")
		w.WriteHeader(http.StatusForbidden)
		fmt.Fprintf(w, `{"kind":"Status","apiVersion":"v1","status":"Failure","message":"forbidden: %s %s","reason":"Forbidden","code":403}`, r.Method, r.URL.Path)
	}))
	defer api.Close()

	dir := t.TempDir()
	tokenFile := filepath.Join(dir, "token")
	if err := os.WriteFile(tokenFile, []byte(token+"\n"), 0o600); err != nil {
		t.Fatal(err)
	}
	for name, user := range map[string]string{
		"token":     "token: " + token,
		"tokenFile": "tokenFile: " + tokenFile,
	} {
		t.Run(name, func(t *testing.T) {
			kc := filepath.Join(t.TempDir(), "kubeconfig")
			doc := fmt.Sprintf(`apiVersion: v1
kind: Config
clusters: [{name: c, cluster: {server: %q, insecure-skip-tls-verify: true}}]
users: [{name: u, user: {%s}}]
contexts: [{name: x, context: {cluster: c, user: u}}]
current-context: x
`, api.URL, user)
			if err := os.WriteFile(kc, []byte(doc), 0o600); err != nil {
				t.Fatal(err)
			}
			mu.Lock()
			sent = 0
			mu.Unlock()

			// The agent: informers, node conditions and Events all fail.
			ctx, cancel := context.WithTimeout(context.Background(), time.Minute)
			defer cancel()
			cmd := exec.CommandContext(ctx, binary, "run", "--kubeconfig", kc, "--node-name", "nd-test", "--log-level", "debug",
				"--metrics-address", "127.0.0.1:0", "--only", "ip-forward,kube-proxy-rules", "--condition-heartbeat", "10s")
			var out bytes.Buffer
			cmd.Stdout, cmd.Stderr = &out, &out
			if err := cmd.Start(); err != nil {
				t.Fatal(err)
			}
			time.Sleep(6 * time.Second)
			_ = cmd.Process.Signal(syscall.SIGTERM)
			_ = cmd.Wait()
			logs := out.String()

			if name == "token" {
				// And a one-shot check, whose report may quote API errors
				// (it waits 30s for the informers that never sync).
				stdout, stderr, _ := runBinary(t, nil, "check", "-o", "json", "--kubeconfig", kc, "--node-name", "nd-test", "--log-level", "debug", "--only", "kube-proxy-rules")
				logs += stdout + stderr
			}

			mu.Lock()
			n := sent
			mu.Unlock()
			if n == 0 {
				t.Fatalf("the API server never received the token; the test proves nothing. Output:\n%.4000s", logs)
			}
			if !strings.Contains(logs, "forbidden") {
				t.Errorf("the API errors were not logged, so the test proves little. Output:\n%.4000s", logs)
			}
			for _, l := range strings.Split(logs, "\n") {
				if strings.Contains(l, token) {
					t.Errorf("the token appears in the agent's output: %s", l)
				}
			}
			t.Logf("%d requests carried the token; %d bytes of output, token in none", n, len(logs))
		})
	}
}
