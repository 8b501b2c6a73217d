// Package server serves the agent's /metrics, /healthz and /readyz.
package server

import (
	"context"
	"crypto/tls"
	"errors"
	"fmt"
	"log/slog"
	"net"
	"net/http"
	"os"
	"time"

	"github.com/prometheus/client_golang/prometheus"
	"github.com/prometheus/client_golang/prometheus/promhttp"
	"golang.org/x/sync/errgroup"
)

// Options say where and how to serve.
type Options struct {
	// MetricsAddress serves /metrics, and also the probes unless Secure.
	MetricsAddress string
	// Secure serves /metrics over HTTPS to callers whose bearer token
	// Reviewer accepts and who may get the /metrics non-resource URL.
	Secure bool
	// HealthAddress serves the probes plain; required when Secure.
	HealthAddress string
	// TLSCertFile and TLSKeyFile are a serving certificate, reloaded when
	// they change; without them one is generated in memory at start.
	TLSCertFile, TLSKeyFile string
	Reviewer                Reviewer
	// Profiling serves /debug/pprof/ with /metrics (with Secure, to
	// callers allowed to get that path).
	Profiling bool
}

// Server is the agent's HTTP endpoints.
type Server struct {
	eps []endpoint
	log *slog.Logger
}

type endpoint struct {
	srv  *http.Server
	ln   net.Listener
	what string
	tls  bool
}

// Listen binds every address so that a port clash fails start-up at once.
func Listen(o Options, reg *prometheus.Registry, healthy, ready func() error, log *slog.Logger) (*Server, error) {
	metrics := promhttp.HandlerFor(reg, promhttp.HandlerOpts{
		Registry: reg, Timeout: 10 * time.Second, MaxRequestsInFlight: 4,
	})
	probes := http.NewServeMux()
	probes.HandleFunc("GET /healthz", probe(healthy))
	probes.HandleFunc("GET /readyz", probe(ready))
	s := &Server{log: log}
	mux := http.NewServeMux()
	var tc *tls.Config
	what := "metrics and probes"
	if o.Secure {
		if o.Reviewer == nil {
			return nil, errors.New("server: secure metrics need a Kubernetes API to check tokens with (--metrics-secure=false serves them plain)")
		}
		if o.HealthAddress == "" {
			return nil, errors.New("server: secure metrics need a health address for the probes")
		}
		var err error
		if tc, err = tlsConfig(o, log); err != nil {
			return nil, err
		}
		guarded := http.NewServeMux()
		guarded.Handle("GET /metrics", metrics)
		if o.Profiling {
			guarded.Handle("GET /debug/pprof/", profiles())
		}
		g := newGuard(o.Reviewer, log, guarded)
		if err := reg.Register(g.results); err != nil {
			return nil, fmt.Errorf("server: metrics: %w", err)
		}
		mux.Handle("GET /metrics", g)
		if o.Profiling {
			mux.Handle("GET /debug/pprof/", g)
		}
		what = "metrics over https"
	} else {
		// Plain: the probes stay where they always were, as well.
		mux.Handle("GET /metrics", metrics)
		mux.Handle("GET /healthz", probes)
		mux.Handle("GET /readyz", probes)
		if o.Profiling {
			mux.Handle("GET /debug/pprof/", profiles())
		}
	}
	if err := s.listen(o.MetricsAddress, what, mux, tc); err != nil {
		return nil, err
	}
	if o.HealthAddress != "" {
		if err := s.listen(o.HealthAddress, "probes", probes, nil); err != nil {
			_ = s.eps[0].ln.Close()
			return nil, err
		}
	}
	return s, nil
}

func tlsConfig(o Options, log *slog.Logger) (*tls.Config, error) {
	// HTTP/1.1 only, as controller-runtime's metrics server: a scraper
	// needs nothing more, and HTTP/2's stream handling stays out of reach
	// of callers not yet authenticated.
	tc := &tls.Config{MinVersion: tls.VersionTLS12, NextProtos: []string{"http/1.1"}}
	switch {
	case o.TLSCertFile != "" || o.TLSKeyFile != "":
		fc, err := loadFileCert(o.TLSCertFile, o.TLSKeyFile, func(err error) {
			log.Warn("metrics TLS certificate not reloaded; the previous one stays in use", "err", err)
		})
		if err != nil {
			return nil, err
		}
		tc.GetCertificate = fc.get
	default:
		host, _ := os.Hostname()
		c, err := selfSigned([]string{host, "localhost", "127.0.0.1", "::1"}, time.Now())
		if err != nil {
			return nil, err
		}
		tc.Certificates = []tls.Certificate{c}
	}
	return tc, nil
}

func (s *Server) listen(addr, what string, h http.Handler, tc *tls.Config) error {
	ln, err := net.Listen("tcp", addr)
	if err != nil {
		return fmt.Errorf("server: listen on %s: %w", addr, err)
	}
	srv := &http.Server{
		Handler:           h,
		TLSConfig:         tc,
		ReadHeaderTimeout: 5 * time.Second,
		ReadTimeout:       10 * time.Second,
		WriteTimeout:      30 * time.Second,
		IdleTimeout:       2 * time.Minute,
		MaxHeaderBytes:    1 << 16,
		ErrorLog:          slog.NewLogLogger(s.log.Handler(), slog.LevelDebug),
	}
	if tc != nil {
		srv.TLSNextProto = map[string]func(*http.Server, *tls.Conn, http.Handler){}
	}
	s.eps = append(s.eps, endpoint{srv: srv, ln: ln, what: what, tls: tc != nil})
	return nil
}

// Addr is the metrics address actually bound (useful with port 0).
func (s *Server) Addr() string { return s.eps[0].ln.Addr().String() }

// HealthAddr is the probes' address actually bound.
func (s *Server) HealthAddr() string { return s.eps[len(s.eps)-1].ln.Addr().String() }

// Secure says whether /metrics is served over HTTPS.
func (s *Server) Secure() bool { return s.eps[0].tls }

// Serve serves until ctx is done, then shuts down gracefully.
func (s *Server) Serve(ctx context.Context) error {
	eg, ctx := errgroup.WithContext(ctx)
	for _, e := range s.eps {
		eg.Go(func() error {
			errc := make(chan error, 1)
			go func() {
				if e.tls {
					errc <- e.srv.ServeTLS(e.ln, "", "")
				} else {
					errc <- e.srv.Serve(e.ln)
				}
			}()
			s.log.Info("serving "+e.what, "address", e.ln.Addr().String())
			select {
			case err := <-errc:
				return fmt.Errorf("server: %w", err)
			case <-ctx.Done():
			}
			sctx, cancel := context.WithTimeout(context.WithoutCancel(ctx), 5*time.Second)
			defer cancel()
			if err := e.srv.Shutdown(sctx); err != nil && !errors.Is(err, http.ErrServerClosed) {
				return fmt.Errorf("server: shutdown: %w", err)
			}
			return nil
		})
	}
	return eg.Wait()
}

func probe(f func() error) http.HandlerFunc {
	return func(w http.ResponseWriter, _ *http.Request) {
		w.Header().Set("Content-Type", "text/plain; charset=utf-8")
		if err := f(); err != nil {
			w.WriteHeader(http.StatusServiceUnavailable)
			fmt.Fprintln(w, err)
			return
		}
		fmt.Fprintln(w, "ok")
	}
}
