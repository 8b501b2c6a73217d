//go:build tools

// Package kube pins the Kubernetes node components the e2e harness runs.
// The blank imports keep `go mod tidy` in this module from dropping them;
// build.sh builds the matching cmd/ binaries.
package kube

import (
	_ "k8s.io/kubernetes/cmd/kube-apiserver/app"
	_ "k8s.io/kubernetes/cmd/kube-controller-manager/app"
	_ "k8s.io/kubernetes/cmd/kube-proxy/app"
	_ "k8s.io/kubernetes/cmd/kubelet/app"
)
