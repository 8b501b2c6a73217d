//go:build tools

// Package prometheus pins the Prometheus server and promtool the e2e suite
// runs (the server with Kubernetes service discovery, which Debian's lacks).
// The blank imports keep `go mod tidy` in this module from dropping them;
// build.sh builds them.
package prometheus

import (
	_ "github.com/prometheus/prometheus/cmd/prometheus"
	_ "github.com/prometheus/prometheus/cmd/promtool"
)
