#!/usr/bin/env bash
# Builds Caddy (with reflex_upload) from this checkout and runs the upload
# benchmark against it. Extra arguments are passed to the benchmark, e.g.
#
#   bash bench/run.sh
#   bash bench/run.sh -size 268435456 -rounds 3
#   bash bench/run.sh -only-baselines -size 67108864
set -euo pipefail

cd "$(dirname "$0")/.."

tmp=$(mktemp -d)
trap 'rm -rf "$tmp"' EXIT

only_baselines=false
for a in "$@"; do
	case "$a" in
	-only-baselines | --only-baselines | -only-baselines=true | --only-baselines=true) only_baselines=true ;;
	esac
done

(cd bench && go build -o "$tmp/upload" ./upload)
if $only_baselines; then
	"$tmp/upload" "$@"
else
	echo "building caddy (./cmd/caddy)..." >&2
	go build -o "$tmp/caddy" ./cmd/caddy
	"$tmp/upload" -caddy "$tmp/caddy" "$@"
fi
