#!/usr/bin/env bash
# Builds Caddy (with reflex_upload) from this checkout and the concurrency
# benchmark (its own module, bench/many, so that tusd stays out of the main
# go.mod), then runs it. Extra arguments are passed to the benchmark, e.g.
#
#   bash bench/many/run.sh                      # 100, 500, 1000 at once
#   bash bench/many/run.sh -n 10000             # ten thousand at once
set -euo pipefail

here="$(cd "$(dirname "$0")" && pwd)"
root="$(cd "$here/../.." && pwd)"

tmp=$(mktemp -d)
trap 'rm -rf "$tmp"' EXIT

echo "building the benchmark (bench/many)..." >&2
(cd "$here/.." && go build -o "$tmp/many" ./many)
echo "building caddy (./cmd/caddy)..." >&2
(cd "$root" && go build -o "$tmp/caddy" ./cmd/caddy)
"$tmp/many" -caddy "$tmp/caddy" "$@"
