#!/usr/bin/env bash
# Starts the demo: mailpit, then Caddy with test/demo/Caddyfile. Ctrl-C stops
# both. Ports can be changed with DEMO_PORT, DEMO_SMTP_PORT, DEMO_MAIL_UI_PORT.
set -euo pipefail
caddy_bin="${1:-bin/caddy}"
here="$(cd "$(dirname "$0")" && pwd)"
export DEMO_DIR="${DEMO_DIR:-$here/../.cache/demo}"
export DEMO_PORT="${DEMO_PORT:-8080}" DEMO_SMTP_PORT="${DEMO_SMTP_PORT:-1025}" DEMO_APP_PORT="${DEMO_APP_PORT:-8081}"
mail_ui="${DEMO_MAIL_UI_PORT:-8025}"
mkdir -p "$DEMO_DIR"

gobin="$(go env GOBIN)"; [ -n "$gobin" ] || gobin="$(go env GOPATH)/bin"
"$gobin/mailpit" --smtp "127.0.0.1:$DEMO_SMTP_PORT" --listen "127.0.0.1:$mail_ui" \
	--database "$DEMO_DIR/mailpit.db" --disable-version-check --smtp-auth-accept-any --smtp-auth-allow-insecure \
	>"$DEMO_DIR/mailpit.log" 2>&1 &
mailpit_pid=$!
trap 'kill "$mailpit_pid" 2>/dev/null || true' EXIT

cat <<MSG

  caddy-mailauth demo
  -------------------
  App:      http://localhost:$DEMO_PORT/   (sign in as "alice" or "bob@demo.test": your own link;
                                          "carol": a contractor, her sponsor alice approves)
  Finance:  http://localhost:$DEMO_PORT/finance/ (the manager's approval, asked for once signed in)
  Mailbox:  http://localhost:$mail_ui/     (every mail arrives here, the managers' too)
  Stop:     Ctrl-C

MSG
"$caddy_bin" run --config "$here/Caddyfile" --adapter caddyfile
