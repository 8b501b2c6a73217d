package server

import (
	"fmt"
	"net/http"
	"runtime"
	"runtime/pprof"
	"strconv"
	"time"
)

// maxProfile bounds a CPU profile's length.
const maxProfile = 5 * time.Minute

// profiles serves Go's CPU profile and the runtime's named profiles (heap,
// allocs, goroutine…) at the paths `go tool pprof` asks for. runtime/pprof
// alone, not net/http/pprof, whose HTML index links html/template into the
// binary.
func profiles() http.Handler {
	mux := http.NewServeMux()
	mux.HandleFunc("GET /debug/pprof/profile", func(w http.ResponseWriter, r *http.Request) {
		d := 30 * time.Second
		if s := r.URL.Query().Get("seconds"); s != "" {
			n, err := strconv.Atoi(s)
			if err != nil || n <= 0 || time.Duration(n)*time.Second > maxProfile {
				http.Error(w, fmt.Sprintf("seconds: a whole number from 1 to %d", int(maxProfile.Seconds())), http.StatusBadRequest)
				return
			}
			d = time.Duration(n) * time.Second
		}
		// The server's write timeout is for scrapes; a profile takes d.
		_ = http.NewResponseController(w).SetWriteDeadline(time.Now().Add(d + 10*time.Second))
		w.Header().Set("Content-Type", "application/octet-stream")
		if err := pprof.StartCPUProfile(w); err != nil {
			http.Error(w, "cpu profile: "+err.Error(), http.StatusConflict)
			return
		}
		select {
		case <-time.After(d):
		case <-r.Context().Done():
		}
		pprof.StopCPUProfile()
	})
	mux.HandleFunc("GET /debug/pprof/{name}", func(w http.ResponseWriter, r *http.Request) {
		p := pprof.Lookup(r.PathValue("name"))
		if p == nil {
			http.Error(w, "no profile "+strconv.Quote(r.PathValue("name")), http.StatusNotFound)
			return
		}
		if r.URL.Query().Get("gc") != "" && p.Name() == "heap" {
			// As net/http/pprof: a collection first gives the live heap.
			runtime.GC()
		}
		w.Header().Set("Content-Type", "application/octet-stream")
		_ = p.WriteTo(w, 0)
	})
	return mux
}
