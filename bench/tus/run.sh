#!/usr/bin/env bash
# Builds Caddy (with reflex_upload) from this checkout and the tus benchmark
# (bench/tus, in the bench module), then runs the benchmark. Extra arguments
# are passed to the benchmark, e.g.
#
#   bash bench/tus/run.sh
#   bash bench/tus/run.sh -size 268435456 -rounds 3
#   bash bench/tus/run.sh -only-baselines -size 67108864 -rounds 1
exec bash "$(dirname "$0")/../internal/run.sh" tus "$@"
