#!/usr/bin/env bash
# Builds Caddy with caddy-mailauth the way operators build plugins: through
# xcaddy. By default it builds this checkout; pass a module version instead
# (for example github.com/mailauth/caddy-mailauth@v0.1.0) to build a release.
#   ./xcaddy.sh [module[@version]]   → ./caddy
set -euo pipefail
here="$(cd "$(dirname "$0")" && pwd)"
CADDY_VERSION="${CADDY_VERSION:-v2.11.9}"
XCADDY_VERSION="${XCADDY_VERSION:-v0.4.5}"
# The zero pseudo-version lets Go resolve the module from the local
# replacement without asking a module proxy for an unpublished module.
with="${1:-github.com/mailauth/caddy-mailauth@v0.0.0-00010101000000-000000000000=$here}"
out="${OUTPUT:-$here/caddy}"
go run "github.com/caddyserver/xcaddy/cmd/xcaddy@${XCADDY_VERSION}" build "$CADDY_VERSION" \
	--with "$with" \
	--output "$out"
"$out" list-modules | grep -E '^(mailauth|http\.handlers\.mailauth)$'
echo "built $out"
