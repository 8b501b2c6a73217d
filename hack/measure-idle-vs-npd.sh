#!/usr/bin/env bash
# Idle cost of node-doctor next to node-problem-detector, in one run on this
# machine, no cluster: three processes started together and sampled
# together for DURATION seconds, their /metrics scraped every SCRAPE seconds:
#   npd         NPD with its image's default monitors (kernel-monitor.json,
#               readonly-monitor.json; reporting to Kubernetes off)
#   nd-npd      node-doctor run with the same NPD flags and files (only the
#               kernel-log check's rule files added; every other check at
#               its default)
#   nd          node-doctor run with its defaults
# Prints VmRSS (anonymous, file-mapped), VmHWM and CPU seconds of each, and
# node-doctor's RSS as a ratio of NPD's.
#
# NPD_BIN: an NPD binary. NPD vendors its modules, so from a checkout of
# github.com/kubernetes/node-problem-detector:
#   CGO_ENABLED=0 go build -mod=vendor -trimpath -ldflags '-s -w' ./cmd/nodeproblemdetector
# (its image builds with journald support and cgo; the two monitors used
# here read /dev/kmsg and need neither).
# NPD_CONFIG: NPD's config/ directory (default: ../shared/npd-config).
# BIN: the node-doctor binary (default: built as the image builds it).
# Usage: NPD_BIN=path [NPD_CONFIG=dir] [BIN=path] hack/measure-idle-vs-npd.sh [DURATION=300] [SCRAPE=15]
set -euo pipefail
cd "$(dirname "$0")/.."
duration=${1:-300}
scrape=${2:-15}
npd=${NPD_BIN:?NPD_BIN: path to a node-problem-detector binary (see the header)}
conf=${NPD_CONFIG:-../shared/npd-config}
bin=${BIN:-}
if [[ -z "$bin" ]]; then
	bin=$(mktemp -d)/node-doctor
	CGO_ENABLED=0 go build -trimpath -ldflags '-s -w' -o "$bin" ./cmd/agent
fi
monitors="${conf}/kernel-monitor.json,${conf}/readonly-monitor.json"

pids=()
trap 'kill "${pids[@]}" 2>/dev/null || true' EXIT
"$npd" --config.system-log-monitor="$monitors" --enable-k8s-exporter=false \
	--prometheus-address=127.0.0.1 --prometheus-port=20357 --address=127.0.0.1 --port=20356 2>/dev/null &
pids+=($!)
"$bin" run --config.system-log-monitor="$monitors" --enable-k8s-exporter=false \
	--prometheus-address=127.0.0.1 --prometheus-port=20358 --log-level warn &
pids+=($!)
"$bin" run --metrics-address 127.0.0.1:20359 --log-level warn &
pids+=($!)
names=(npd nd-npd nd)
ports=(20357 20358 20359)

tck=$(getconf CLK_TCK)
sleep 5
cpu0=()
for p in "${pids[@]}"; do
	cpu0+=("$(awk '{print $14+$15}' "/proc/${p}/stat")")
done
end=$((SECONDS + duration))
while ((SECONDS < end)); do
	for port in "${ports[@]}"; do
		curl -fsS "http://127.0.0.1:${port}/metrics" >/dev/null
	done
	sleep "${scrape}"
done
npdrss=$(awk '/VmRSS/ {print $2}' "/proc/${pids[0]}/status")
for i in "${!pids[@]}"; do
	p=${pids[$i]}
	st=/proc/${p}/status
	exe=$(readlink "/proc/${p}/exe")
	awk -v n="${names[$i]}" -v c0="${cpu0[$i]}" -v c1="$(awk '{print $14+$15}' "/proc/${p}/stat")" -v t="$tck" -v d="$duration" \
		-v rss="$(awk '/VmRSS/ {print $2}' "$st")" -v hwm="$(awk '/VmHWM/ {print $2}' "$st")" \
		-v anon="$(awk '/RssAnon/ {print $2}' "$st")" -v file="$(awk '/RssFile/ {print $2}' "$st")" \
		-v npd="$npdrss" -v size="$(stat -c %s "$exe")" 'BEGIN {
		cpu = (c1 - c0) / t
		printf "%-7s rss %5.1f MiB (anon %5.1f, file %5.1f) = %.2fx npd, peak %5.1f MiB, cpu %.2fs over %ds (%.2f mCPU), binary %.1f MB\n",
			n, rss / 1024, anon / 1024, file / 1024, rss / npd, hwm / 1024, cpu, d, 1000 * cpu / d, size / 1e6
	}'
done
