# ratefleet: build, test, lint, run and benchmark. Needs only Go; every tool is
# fetched by `go run pkg@version`.

GO          ?= go
STATICCHECK ?= honnef.co/go/tools/cmd/staticcheck@v0.8.2
BIN         ?= bin
DURATION    ?= 60s
BENCH_TIME  ?= 60s
FAILOVER_TIME ?= 5m

.PHONY: all build test test-short lint run bench bench-exchange bench-saturation bench-delays bench-failover clean

all: build

build:
	$(GO) build -o $(BIN)/ ./cmd/...

# The tests that run real worker processes go last, on their own, so that other
# packages' tests do not load the machine under them.
test:
	$(GO) test -race -timeout 9m $$($(GO) list ./... | grep -v /internal/fleet)
	$(GO) test -race -timeout 9m ./internal/fleet/

test-short:
	$(GO) test -short ./...

lint:
	@out=$$(gofmt -l $$(git ls-files '*.go' 2>/dev/null || find . -name '*.go')); \
	  if [ -n "$$out" ]; then echo "gofmt would change:"; echo "$$out"; exit 1; fi
	$(GO) vet ./...
	$(GO) run $(STATICCHECK) ./...

HTTP        ?=

run: build
	$(BIN)/fleet --duration $(DURATION) --bin $(BIN) $(if $(HTTP),--http $(HTTP))

# Benchmarks run real processes against the simulator on loopback; see README.
bench: bench-exchange bench-saturation bench-delays bench-failover

bench-exchange:
	$(GO) test -run '^$$' -bench . -benchtime 1x ./internal/exchange/

bench-saturation: build
	$(BIN)/fleet bench --duration $(BENCH_TIME) --bin $(BIN)

# The limiter against delays its L does not bound: (a) reference, (b) a spread,
# (c) spikes, (d) DELAY_KEYS keys on this machine. One Markdown table.
DELAY_TIME  ?= 30s
DELAY_KEYS  ?= 200
bench-delays: build
	$(BIN)/fleet delays --duration $(DELAY_TIME) --many-keys $(DELAY_KEYS) --bin $(BIN)

bench-failover: build
	$(BIN)/fleet failover --duration $(FAILOVER_TIME) --bin $(BIN)

clean:
	rm -rf $(BIN)
