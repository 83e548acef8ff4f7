#!/usr/bin/env bash
# The load half of `make bench`: installs wrk when missing, builds Caddy
# without -race plus the bench tools, and runs test/bench/load, which starts
# every process it needs on loopback, kills each by PID when done, prints one
# results table and writes BENCHMARKS.md. Extra arguments go to the load
# program (see `go run ./test/bench/load -h`).
set -euo pipefail
cd "$(dirname "$0")/../.."
GO=${GO:-go}

if ! command -v wrk >/dev/null 2>&1; then
	sudo=""
	[ "$(id -u)" -ne 0 ] && sudo="sudo"
	$sudo apt-get update -qq
	$sudo env DEBIAN_FRONTEND=noninteractive apt-get install -y -qq wrk
fi
mailpit="$($GO env GOPATH | cut -d: -f1)/bin/mailpit"
if [ ! -x "$mailpit" ]; then
	bash test/setup.sh
fi

$GO build -o bin/caddy ./cmd/caddy
$GO build -o bin/bench-load ./test/bench/load
$GO build -o bin/bench-prefill ./test/bench/prefill
exec bin/bench-load -caddy bin/caddy -prefill bin/bench-prefill -mailpit "$mailpit" "$@"
