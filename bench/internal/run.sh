#!/usr/bin/env bash
# Builds one command of the bench module (the first argument: upload, tus
# or many) and Caddy with reflex_upload from this checkout into a temp dir,
# then runs the benchmark with -caddy and the other arguments. Under
# -only-baselines Caddy is not built. The run.sh scripts call this.
set -euo pipefail

cmd=$1
shift
bench="$(cd "$(dirname "$0")/.." && pwd)"
root="$(cd "$bench/.." && pwd)"

tmp=$(mktemp -d)
trap 'rm -rf "$tmp"' EXIT

only_baselines=false
for a in "$@"; do
	case "$a" in
	-only-baselines | --only-baselines | -only-baselines=true | --only-baselines=true) only_baselines=true ;;
	esac
done

echo "building the benchmark (bench/$cmd)..." >&2
(cd "$bench" && go build -o "$tmp/$cmd" "./$cmd")
if $only_baselines; then
	"$tmp/$cmd" "$@"
else
	echo "building caddy (./cmd/caddy)..." >&2
	(cd "$root" && go build -o "$tmp/caddy" ./cmd/caddy)
	"$tmp/$cmd" -caddy "$tmp/caddy" "$@"
fi
