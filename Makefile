# caddy-mailauth. `make run` starts a demo; `make test` installs what the
# tests need (idempotent) and runs every test with the race detector.

GO       ?= go
BIN      := bin
TESTBIN  := test/.cache/caddy

.PHONY: all build run test setup check unit integration bench clean

all: build

## build: Caddy with the standard modules and mailauth, in bin/caddy.
build:
	$(GO) build -o $(BIN)/caddy ./cmd/caddy

## setup: install chromium, slapd, ldap-utils, redis-server, redis-sentinel, npm, mailpit and axe-core when missing (idempotent).
setup:
	bash test/setup.sh

## check: formatting and vet.
check:
	@out="$$(gofmt -l $$(git ls-files '*.go' 2>/dev/null || find . -name '*.go'))"; \
	if [ -n "$$out" ]; then echo "gofmt would change:"; echo "$$out"; exit 1; fi
	$(GO) vet ./...

## test: everything, against real mailpit, slapd, redis-server, Caddy and Chromium.
test: setup check
	$(GO) build -race -tags mailauth_testclock -o $(TESTBIN) ./cmd/caddy
	CADDY_BIN=$(CURDIR)/$(TESTBIN) $(GO) test -race -count=1 -timeout 15m ./...

## bench: Go benchmarks of the hot paths, then the load test (wrk against a
## non-race Caddy, mailpit, pre-filled stores); one table, in BENCHMARKS.md.
BENCH_GO   := $(GO) test -run '^$$' -bench . -benchmem -count=1 ./approval/ ./caddymodule/ ./store/
BENCH_LOAD := bash test/bench/load.sh -gobench $(BIN)/bench-go.txt -out BENCHMARKS.md
bench:
	@mkdir -p $(BIN)
	$(BENCH_GO) > $(BIN)/bench-go.txt || { cat $(BIN)/bench-go.txt; exit 1; }
	@cat $(BIN)/bench-go.txt
	$(BENCH_LOAD) -commands "make bench;$(BENCH_GO) > $(BIN)/bench-go.txt;$(BENCH_LOAD)"

## run: the demo: Caddy on http://localhost:8080 and mailpit on :8025.
run: build
	bash test/setup.sh --demo
	bash test/demo/run.sh $(BIN)/caddy

clean:
	rm -rf $(BIN) test/.cache
