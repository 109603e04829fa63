#!/usr/bin/env bash
# Builds Caddy (with reflex_upload) from this checkout and the S3 benchmark
# (bench/s3, in the bench module), installs the engines where missing, then
# runs the benchmark against a versitygw of its own. Extra arguments are
# passed to the benchmark, e.g.
#
#   bash bench/s3/run.sh
#   bash bench/s3/run.sh -size 64MiB -rounds 1
set -euo pipefail
engines="$(cd "$(dirname "$0")/../.." && pwd)/scripts/engines"
"$engines/install"
exec bash "$(dirname "$0")/../internal/run.sh" s3 -engines "$engines" "$@"
