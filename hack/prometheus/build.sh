#!/usr/bin/env bash
# Builds the pinned Prometheus server and promtool from the Go module proxy
# into _output/prometheus/<version>/bin, reusing that directory when nothing
# changed. Debian's prometheus package is built without Kubernetes service
# discovery, which the deploy e2e test scrapes the agent pods with.
#
#   hack/prometheus/build.sh               build (or reuse) the pinned version
#   hack/prometheus/build.sh print-bin     print the prometheus binary's path
#   hack/prometheus/build.sh print-promtool  print promtool's path
#
# The only place the version is written is the `require
# github.com/prometheus/prometheus` line of hack/prometheus/go.mod (module
# v0.X.Y is Prometheus v2.X.Y). Its go.mod has replace directives, so it cannot
# be `go install`ed; this module repeats them.
set -euo pipefail

here="$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)"
root="$(cd "${here}/../.." && pwd)"
# Test fixtures, not shipped: built with the machine's own Go so the cache survives
# the agent's toolchain pin (GOTOOLCHAIN in the Makefile).
export GOTOOLCHAIN=local
export GOWORK=off GOFLAGS="${GOFLAGS:-} -buildvcs=false"
export CGO_ENABLED="${CGO_ENABLED:-0}"

binaries=(prometheus promtool)

module_version() {
	(cd "${here}" && go list -m -f '{{.Version}}' github.com/prometheus/prometheus)
}

# v0.54.1 -> v2.54.1: the module is published with major version 0.
prom_version() {
	local v="$1"
	echo "v2.${v#v0.}"
}

bin_dir() {
	echo "${root}/_output/prometheus/$(prom_version "$(module_version)")/bin"
}

build() {
	local mv v bin stamp want
	mv="$(module_version)"
	v="$(prom_version "${mv}")"
	bin="$(bin_dir)"
	stamp="${bin}/../.stamp"
	# The stamp covers the exact dependency set and toolchain, so a changed
	# go.sum or Go version rebuilds even when the version did not move.
	want="$(cat "${here}/go.mod" "${here}/go.sum" | sha256sum | cut -d' ' -f1) $(go env GOVERSION)"
	local have=1
	for b in "${binaries[@]}"; do [[ -x "${bin}/${b}" ]] || have=0; done
	if [[ ${have} == 1 && -f "${stamp}" && "$(cat "${stamp}")" == "${want}" ]]; then
		echo "prometheus ${v}: reusing ${bin}"
		return
	fi
	mkdir -p "${bin}"
	rm -f "${stamp}"
	local pkgs=()
	for b in "${binaries[@]}"; do pkgs+=("github.com/prometheus/prometheus/cmd/${b}"); done
	echo "prometheus ${v}: building ${binaries[*]} into ${bin} (first build: ~14 CPU-minutes, see docs/deploy.md)"
	local start=${SECONDS} pv="github.com/prometheus/common/version"
	# Upstream's promu sets these; without them --version says nothing useful.
	(cd "${here}" && go build -trimpath -o "${bin}/" \
		-ldflags "-s -w -X ${pv}.Version=${v#v} -X ${pv}.Branch=HEAD -X ${pv}.BuildUser=node-doctor-hack" "${pkgs[@]}")
	echo "${want}" > "${stamp}"
	echo "prometheus ${v}: built in $((SECONDS - start))s"
}

case "${1:-build}" in
	build) build ;;
	print-bin) echo "$(bin_dir)/prometheus" ;;
	print-promtool) echo "$(bin_dir)/promtool" ;;
	*) echo "usage: $0 [build|print-bin|print-promtool]" >&2; exit 2 ;;
esac
