#!/usr/bin/env bash
# Builds Caddy (with reflex_upload) from this checkout and the tus benchmark
# (its own module, bench/tus), then runs the benchmark. Extra arguments are
# passed to the benchmark, e.g.
#
#   bash bench/tus/run.sh
#   bash bench/tus/run.sh -size 268435456 -rounds 3
#   bash bench/tus/run.sh -only-baselines -size 67108864 -rounds 1
set -euo pipefail

here="$(cd "$(dirname "$0")" && pwd)"
root="$(cd "$here/../.." && pwd)"

tmp=$(mktemp -d)
trap 'rm -rf "$tmp"' EXIT

only_baselines=false
for a in "$@"; do
	case "$a" in
	-only-baselines | --only-baselines | -only-baselines=true | --only-baselines=true) only_baselines=true ;;
	esac
done

echo "building the tus benchmark (bench/tus)..." >&2
(cd "$here/.." && go build -o "$tmp/tusbench" ./tus)
if $only_baselines; then
	"$tmp/tusbench" "$@"
else
	echo "building caddy (./cmd/caddy)..." >&2
	(cd "$root" && go build -o "$tmp/caddy" ./cmd/caddy)
	"$tmp/tusbench" -caddy "$tmp/caddy" "$@"
fi
