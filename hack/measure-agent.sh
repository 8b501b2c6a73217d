#!/usr/bin/env bash
# Measures node-doctor run's steady-state cost on this machine: starts the
# agent on a loopback port, scrapes it every SCRAPE seconds for DURATION
# seconds, and prints peak RSS, its anonymous and file-mapped parts, and CPU
# seconds used after start-up.
# Usage: [BIN=path] [PORT=19798] hack/measure-agent.sh [DURATION=300] [SCRAPE=15]
# (BIN: measure that binary instead of building this tree's)
set -euo pipefail
cd "$(dirname "$0")/.."
duration=${1:-300}
scrape=${2:-15}
bin=${BIN:-}
if [[ -z "$bin" ]]; then
	make -s build
	bin=./_output/bin/node-doctor
fi
port=${PORT:-19798}
"$bin" run --metrics-address "127.0.0.1:${port}" --log-level warn &
pid=$!
trap 'kill $pid 2>/dev/null || true' EXIT
tck=$(getconf CLK_TCK)
sleep 5
cpu0=$(awk '{print $14+$15}' "/proc/${pid}/stat")
end=$((SECONDS + duration))
while ((SECONDS < end)); do
	curl -fsS "http://127.0.0.1:${port}/metrics" >/dev/null
	sleep "${scrape}"
done
cpu1=$(awk '{print $14+$15}' "/proc/${pid}/stat")
rss=$(awk '/VmRSS/ {print $2}' "/proc/${pid}/status")
hwm=$(awk '/VmHWM/ {print $2}' "/proc/${pid}/status")
anon=$(awk '/RssAnon/ {print $2}' "/proc/${pid}/status")
file=$(awk '/RssFile/ {print $2}' "/proc/${pid}/status")
awk -v c0="$cpu0" -v c1="$cpu1" -v t="$tck" -v d="$duration" -v rss="$rss" -v hwm="$hwm" -v anon="$anon" -v file="$file" -v size="$(stat -c %s "$bin")" 'BEGIN {
	cpu = (c1 - c0) / t
	printf "duration %ds: cpu %.2fs (%.3f%% of one core), rss %.1f MiB (anon %.1f, file %.1f), peak rss %.1f MiB, binary %.1f MB\n", d, cpu, 100 * cpu / d, rss / 1024, anon / 1024, file / 1024, hwm / 1024, size / 1e6
}'
