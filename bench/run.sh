#!/usr/bin/env bash
# Builds Caddy (with reflex_upload) from this checkout and runs the upload
# benchmark against it. Extra arguments are passed to the benchmark, e.g.
#
#   bash bench/run.sh
#   bash bench/run.sh -size 268435456 -rounds 3
#   bash bench/run.sh -only-baselines -size 67108864
exec bash "$(dirname "$0")/internal/run.sh" upload "$@"
