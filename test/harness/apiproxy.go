package harness

import (
	"context"
	"crypto/tls"
	"crypto/x509"
	"errors"
	"fmt"
	"net"
	"net/http"
	"net/http/httputil"
	"net/url"
	"os"
	"path/filepath"
	"strings"
	"sync"
	"sync/atomic"
	"time"

	"k8s.io/client-go/tools/clientcmd"

	"github.com/node-doctor/node-doctor/pkg/kube"
)

// APIProxy is a reverse proxy on loopback between one client and the API
// server, counting what that client costs the server: requests by kind,
// response body bytes, response content types, and the TCP bytes of the
// client's connections (TLS and HTTP/2 framing included). It terminates TLS
// with the API server's own serving certificate (valid for 127.0.0.1), so
// the client's kubeconfig keeps the cluster CA; credentials pass through.
type APIProxy struct {
	// URL is the proxy's address for a kubeconfig's server field.
	URL string

	srv     *http.Server
	l       net.Listener
	toCli   atomic.Int64
	fromCli atomic.Int64
	mu      sync.Mutex
	reqs    map[APIRequest]*APIRequestStats
}

// APIRequest is a kind of request: verb and resource as kube.RequestKind
// names them, and whether a watch asked for its initial state as events
// (a streaming watch-list, sendInitialEvents=true) instead of a LIST.
type APIRequest struct {
	Verb, Resource string
	WatchList      bool
}

func (r APIRequest) String() string {
	s := r.Verb + " " + r.Resource
	if r.WatchList {
		s += " (watch-list)"
	}
	return s
}

// APIRequestStats are the totals of one kind of request.
type APIRequestStats struct {
	Count int
	// BodyBytes are response body bytes (what the server encoded).
	BodyBytes int64
	// ContentTypes counts the responses' Content-Type values.
	ContentTypes map[string]int
}

// APIStats are an APIProxy's counters at one moment.
type APIStats struct {
	Requests map[APIRequest]APIRequestStats
	// WireToClient and WireFromClient are TCP payload bytes.
	WireToClient, WireFromClient int64
}

// Sub returns s minus an earlier snapshot.
func (s APIStats) Sub(before APIStats) APIStats {
	out := APIStats{Requests: map[APIRequest]APIRequestStats{},
		WireToClient: s.WireToClient - before.WireToClient, WireFromClient: s.WireFromClient - before.WireFromClient}
	for k, v := range s.Requests {
		b := before.Requests[k]
		d := APIRequestStats{Count: v.Count - b.Count, BodyBytes: v.BodyBytes - b.BodyBytes, ContentTypes: map[string]int{}}
		for ct, n := range v.ContentTypes {
			if n -= b.ContentTypes[ct]; n != 0 {
				d.ContentTypes[ct] = n
			}
		}
		if d.Count != 0 || d.BodyBytes != 0 {
			out.Requests[k] = d
		}
	}
	return out
}

// Verb sums requests and body bytes of one verb ("list", "watch", ...).
func (s APIStats) Verb(verb string) (count int, bodyBytes int64) {
	for k, v := range s.Requests {
		if k.Verb == verb {
			count += v.Count
			bodyBytes += v.BodyBytes
		}
	}
	return count, bodyBytes
}

// StartAPIProxy starts a proxy to the node's API server on a free loopback
// port; it serves until Close.
func (c *Cluster) StartAPIProxy() (*APIProxy, error) {
	pkiDir := filepath.Join(c.WorkDir, "pki")
	caPEM, err := os.ReadFile(filepath.Join(pkiDir, "ca.crt"))
	if err != nil {
		return nil, fmt.Errorf("harness: api proxy: %w", err)
	}
	pool := x509.NewCertPool()
	pool.AppendCertsFromPEM(caPEM)
	target, err := url.Parse(c.RESTConfig.Host)
	if err != nil {
		return nil, fmt.Errorf("harness: api proxy: %w", err)
	}
	l, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		return nil, fmt.Errorf("harness: api proxy: %w", err)
	}
	p := &APIProxy{URL: "https://" + l.Addr().String(), reqs: map[APIRequest]*APIRequestStats{}}
	p.l = countingListener{Listener: l, p: p}
	rp := httputil.NewSingleHostReverseProxy(target)
	rp.FlushInterval = -1 // watches stream
	rp.Transport = &http.Transport{
		TLSClientConfig:   &tls.Config{RootCAs: pool, MinVersion: tls.VersionTLS12},
		ForceAttemptHTTP2: true,
		IdleConnTimeout:   time.Minute,
	}
	p.srv = &http.Server{Handler: p.count(rp), ReadHeaderTimeout: 10 * time.Second}
	go func() {
		if err := p.srv.ServeTLS(p.l, filepath.Join(pkiDir, "apiserver.crt"), filepath.Join(pkiDir, "apiserver.key")); err != nil && !errors.Is(err, http.ErrServerClosed) {
			c.log.Error("api proxy stopped", "err", err)
		}
	}()
	return p, nil
}

// Close stops the proxy and cuts its clients' connections.
func (p *APIProxy) Close() error { return p.srv.Close() }

// Stats returns the counters so far.
func (p *APIProxy) Stats() APIStats {
	p.mu.Lock()
	defer p.mu.Unlock()
	out := APIStats{Requests: map[APIRequest]APIRequestStats{}, WireToClient: p.toCli.Load(), WireFromClient: p.fromCli.Load()}
	for k, v := range p.reqs {
		c := *v
		c.ContentTypes = map[string]int{}
		for ct, n := range v.ContentTypes {
			c.ContentTypes[ct] = n
		}
		out.Requests[k] = c
	}
	return out
}

func (p *APIProxy) count(next http.Handler) http.Handler {
	return http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		verb, resource := kube.RequestKind(r.Method, r.URL)
		k := APIRequest{Verb: verb, Resource: resource, WatchList: verb == "watch" && r.URL.Query().Get("sendInitialEvents") == "true"}
		cw := &countingWriter{ResponseWriter: w}
		p.mu.Lock()
		s := p.reqs[k]
		if s == nil {
			s = &APIRequestStats{ContentTypes: map[string]int{}}
			p.reqs[k] = s
		}
		s.Count++
		p.mu.Unlock()
		// A watch's bytes are added as they stream.
		cw.add = func(n int) {
			p.mu.Lock()
			s.BodyBytes += int64(n)
			p.mu.Unlock()
		}
		cw.header = func(ct string) {
			p.mu.Lock()
			s.ContentTypes[ct]++
			p.mu.Unlock()
		}
		next.ServeHTTP(cw, r)
	})
}

type countingWriter struct {
	http.ResponseWriter
	add     func(int)
	header  func(string)
	written bool
}

func (w *countingWriter) WriteHeader(code int) {
	if !w.written {
		w.written = true
		w.header(w.Header().Get("Content-Type"))
	}
	w.ResponseWriter.WriteHeader(code)
}

func (w *countingWriter) Write(b []byte) (int, error) {
	if !w.written {
		w.WriteHeader(http.StatusOK)
	}
	n, err := w.ResponseWriter.Write(b)
	w.add(n)
	return n, err
}

// Unwrap lets the reverse proxy flush each watch event.
func (w *countingWriter) Unwrap() http.ResponseWriter { return w.ResponseWriter }

type countingListener struct {
	net.Listener
	p *APIProxy
}

func (l countingListener) Accept() (net.Conn, error) {
	c, err := l.Listener.Accept()
	if err != nil {
		return nil, err
	}
	return &countingConn{Conn: c, p: l.p}, nil
}

type countingConn struct {
	net.Conn
	p *APIProxy
}

func (c *countingConn) Read(b []byte) (int, error) {
	n, err := c.Conn.Read(b)
	c.p.fromCli.Add(int64(n))
	return n, err
}

func (c *countingConn) Write(b []byte) (int, error) {
	n, err := c.Conn.Write(b)
	c.p.toCli.Add(int64(n))
	return n, err
}

// KubeconfigVia writes a copy of a component's kubeconfig ("admin",
// "kube-proxy", ...) whose server is server, and returns its path.
func (c *Cluster) KubeconfigVia(who, server string) (string, error) {
	path := filepath.Join(c.WorkDir, who+".kubeconfig")
	out := filepath.Join(c.WorkDir, who+"-via-"+strings.NewReplacer(":", "-", "/", "-").Replace(strings.TrimPrefix(server, "https://"))+".kubeconfig")
	return out, rewriteServer(path, out, server)
}

func rewriteServer(in, out, server string) error {
	cfg, err := clientcmd.LoadFromFile(in)
	if err != nil {
		return fmt.Errorf("harness: kubeconfig %s: %w", in, err)
	}
	for _, cl := range cfg.Clusters {
		cl.Server = server
	}
	if err := clientcmd.WriteToFile(*cfg, out); err != nil {
		return fmt.Errorf("harness: kubeconfig %s: %w", out, err)
	}
	return nil
}

// RouteKubeProxy restarts kube-proxy with its kubeconfig's server set to
// server (e.g. an APIProxy's URL) and waits until it is healthy again.
func (c *Cluster) RouteKubeProxy(ctx context.Context, server string) error {
	restart, err := c.Kill(ctx, "kube-proxy")
	if err != nil {
		return err
	}
	path := filepath.Join(c.WorkDir, "kube-proxy.kubeconfig")
	if err := rewriteServer(path, path, server); err != nil {
		return err
	}
	if err := restart(ctx); err != nil {
		return err
	}
	return waitFor(ctx, c.state.proc("kube-proxy"), 60*time.Second, "kube-proxy /healthz",
		httpOK(fmt.Sprintf("http://127.0.0.1:%d/healthz", proxyHealthz), nil))
}
