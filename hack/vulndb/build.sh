#!/usr/bin/env bash
# Builds a Go vulnerability database (the format govulncheck -db file:// reads)
# from a pinned snapshot of golang.org/x/vulndb on the Go module proxy, so
# `make vuln` works where vuln.go.dev cannot be reached. Cached under
# _output/vulndb/<version>; prints the database directory.
#
#   hack/vulndb/build.sh [version]
set -euo pipefail

here="$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)"
root="$(cd "${here}/../.." && pwd)"
version="${1:?usage: hack/vulndb/build.sh <golang.org/x/vulndb version>}"
out="${root}/_output/vulndb/${version}"
tools="${root}/_output/tools"

if [[ -f "${out}/db/index/db.json" && -f "${out}/stamp" ]]; then
	echo "${out}/db"
	exit 0
fi

export GOWORK=off GOFLAGS="${GOFLAGS:-} -buildvcs=false"
src="$(cd / && go mod download -json "golang.org/x/vulndb@${version}" |
	sed -n 's/.*"Dir": "\(.*\)".*/\1/p')"
[[ -d "${src}/data/osv" ]] || { echo "vulndb: no data/osv in golang.org/x/vulndb@${version}" >&2; exit 1; }

# indexdb is the vulndb project's own tool for turning OSV files into a database.
GOBIN="${tools}" go install "golang.org/x/vulndb/cmd/indexdb@${version}" >&2
rm -rf "${out}"
mkdir -p "${out}"
"${tools}/indexdb" -vulns "${src}/data/osv" -out "${out}/db" >&2
echo "golang.org/x/vulndb@${version} $(ls "${src}/data/osv" | wc -l) entries" >"${out}/stamp"
echo "${out}/db"
