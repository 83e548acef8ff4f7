#!/usr/bin/env bash
# Installs what the tests and the demo need, and nothing that is already
# there, so running it twice costs seconds: Debian's chromium for the browser
# tests, slapd and ldap-utils for the LDAP tests, redis-server and
# redis-sentinel for the Redis store's tests, mailpit (the SMTP server the
# tests deliver to), and axe-core from the npm registry, which the browser
# tests inject into every page to check it for WCAG 2.2 AA.
set -euo pipefail

MAILPIT_VERSION=v1.33.1
AXE_VERSION=4.14.1
here="$(cd "$(dirname "$0")" && pwd)"

# --demo installs only what `make run` needs: mailpit.
demo=false
[ "${1:-}" = "--demo" ] && demo=true

need_apt=()
if ! $demo; then
command -v chromium >/dev/null 2>&1 || need_apt+=(chromium)
# OpenLDAP for the directory tests (test/slapd starts its own slapd on free
# ports; the system one that the package may start on :389 is not used).
[ -x /usr/sbin/slapd ] || need_apt+=(slapd)
command -v ldapsearch >/dev/null 2>&1 || need_apt+=(ldap-utils)
# Redis for the Redis store's tests (test/redisserver starts its own
# redis-server on a free port; the system one the package may start on :6379
# is not used).
command -v redis-server >/dev/null 2>&1 || need_apt+=(redis-server)
# Sentinel for the failover test (test/redisserver starts its own three).
command -v redis-sentinel >/dev/null 2>&1 || need_apt+=(redis-sentinel)
command -v npm >/dev/null 2>&1 || need_apt+=(npm)
fi
if [ ${#need_apt[@]} -gt 0 ]; then
	echo "setup: installing ${need_apt[*]} from Debian"
	if [ "$(id -u)" -ne 0 ]; then SUDO=sudo; else SUDO=; fi
	$SUDO apt-get update -qq
	$SUDO env DEBIAN_FRONTEND=noninteractive apt-get install -y -qq "${need_apt[@]}" >/dev/null
fi

gobin="$(go env GOBIN)"
[ -n "$gobin" ] || gobin="$(go env GOPATH)/bin"
# `go version -m` reads the module version stamped into the binary; it runs
# nothing (`mailpit version` would try to reach the network).
if ! go version -m "$gobin/mailpit" 2>/dev/null | grep -Eq "^[[:space:]]+mod[[:space:]]+github.com/axllent/mailpit[[:space:]]+${MAILPIT_VERSION}"; then
	echo "setup: building mailpit ${MAILPIT_VERSION} (once; it is kept in $gobin)"
	# Built outside this module so its dependencies stay out of our go.mod.
	(cd "$(mktemp -d)" && GOFLAGS=-buildvcs=false go install "github.com/axllent/mailpit@${MAILPIT_VERSION}")
fi
if $demo; then
	echo "setup: ok for the demo (mailpit ${MAILPIT_VERSION} in $gobin)"
	exit 0
fi
# axe-core goes into test/.cache/axe-core, outside any package.json of the
# project, pinned; a second run finds it and does nothing.
axe_dir="$here/.cache/axe-core"
axe_pkg="$axe_dir/node_modules/axe-core/package.json"
if [ ! -f "$axe_pkg" ] || ! grep -q "\"version\": \"${AXE_VERSION}\"" "$axe_pkg"; then
	echo "setup: installing axe-core ${AXE_VERSION} from npm into $axe_dir"
	mkdir -p "$axe_dir"
	npm install --prefix "$axe_dir" --no-save --no-audit --no-fund --loglevel=error "axe-core@${AXE_VERSION}" >/dev/null
fi
echo "setup: ok (axe-core ${AXE_VERSION}, $(chromium --version 2>/dev/null), $(/usr/sbin/slapd -VV 2>&1 | grep -o 'slapd [0-9.]*' | head -n1), $(redis-server --version | grep -o 'v=[0-9.]*' | sed 's/^v=/redis-server /'), mailpit ${MAILPIT_VERSION} in $gobin)"
