#!/usr/bin/env bash
# Builds Caddy (with reflex_upload) from this checkout and the concurrency
# benchmark (bench/many, in the bench module, so that tusd stays out of the
# main go.mod), then runs it. Extra arguments are passed to the benchmark,
# e.g.
#
#   bash bench/many/run.sh                      # 100, 500, 1000 at once
#   bash bench/many/run.sh -n 10000             # ten thousand at once
exec bash "$(dirname "$0")/../internal/run.sh" many "$@"
