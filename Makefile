# ratefleet: build, test, lint, run and benchmark. Needs only Go; every tool is
# fetched by `go run pkg@version`.

GO          ?= go
STATICCHECK ?= honnef.co/go/tools/cmd/staticcheck@v0.8.2
# promtool checks the alerting rules in docs/ (a heavy first build: lint only).
PROMTOOL    ?= github.com/prometheus/prometheus/cmd/promtool@v0.316.0
GREMLINS    ?= github.com/go-gremlins/gremlins/cmd/gremlins@v0.6.0
# The nats CLI, for the test that calls the service with `nats req` (its first
# build takes about a minute, then it is kept in bin/).
NATSCLI     ?= github.com/nats-io/natscli/nats@v0.5.0
BIN         ?= bin
DURATION    ?= 60s
BENCH_TIME  ?= 60s
FAILOVER_TIME ?= 5m

.PHONY: all build test test-short lint mutation run bench bench-exchange bench-saturation bench-delays bench-failover bench-models bench-scale bench-cpu bench-cluster bench-soak bench-partition clean

all: build

build:
	$(GO) build -o $(BIN)/ ./cmd/...

# The tests that run real worker processes go last, on their own, so that other
# packages' tests do not load the machine under them. internal/service's test
# finds the nats CLI at bin/nats.
test: bin/nats
	$(GO) test -race -timeout 9m $$($(GO) list ./... | grep -v /internal/fleet)
	$(GO) test -race -timeout 9m ./internal/fleet/

bin/nats:
	GOBIN=$(CURDIR)/bin $(GO) install $(NATSCLI)

test-short:
	$(GO) test -short ./...

lint:
	@out=$$(gofmt -l $$(git ls-files '*.go' 2>/dev/null || find . -name '*.go')); \
	  if [ -n "$$out" ]; then echo "gofmt would change:"; echo "$$out"; exit 1; fi
	$(GO) vet ./...
	$(GO) run $(STATICCHECK) ./...
	cd docs && $(GO) run $(PROMTOOL) check rules alerts.yml && $(GO) run $(PROMTOOL) test rules alerts_test.yml

# Mutation testing of the limiter (about 10 minutes on 2 cores): every mutant of
# internal/limiter is run against the package's tests at their -short counts. A
# mutant that lives is a change no test notices; the README lists those left and
# why each is harmless.
mutation:
	GOFLAGS=-short $(GO) run $(GREMLINS) unleash --workers 2 ./internal/limiter

HTTP        ?=
CLUSTER     ?= 1

run: build
	$(BIN)/fleet --duration $(DURATION) --bin $(BIN) --cluster $(CLUSTER) $(if $(HTTP),--http $(HTTP))

# Benchmarks run real processes against the simulator on loopback; see README.
bench: bench-exchange bench-saturation bench-delays bench-failover bench-scale bench-cluster

bench-exchange:
	$(GO) test -run '^$$' -bench . -benchtime 1x ./internal/exchange/

bench-saturation: build
	$(BIN)/fleet bench --duration $(BENCH_TIME) --bin $(BIN)

# The limiter against delays its L does not bound: (a) reference, (b) a spread,
# (c) spikes, (d) DELAY_KEYS keys on this machine, (e) a 2.5 s tail, (f) a 12 s
# tail past the timeout, (g) a per-minute rule with spikes, (h) no nonce at
# 100/s. One Markdown table.
DELAY_TIME  ?= 30s
DELAY_KEYS  ?= 200
bench-delays: build
	$(BIN)/fleet delays --duration $(DELAY_TIME) --many-keys $(DELAY_KEYS) --bin $(BIN)

# The fleet against the simulator's models of real upstreams (a rule shared by
# five keys, Binance, an LLM API), each with its profile, an outside client seen
# only in usage headers, and routing with priorities: about 20 minutes.
MODELS_TIME ?= 60s
bench-models: build
	$(BIN)/fleet models --bin $(BIN) --duration $(MODELS_TIME)

bench-failover: build
	$(BIN)/fleet failover --duration $(FAILOVER_TIME) --bin $(BIN)

clean:
	rm -rf $(BIN)

# Keys 5 to 1,000 held by five workers: claim time, idle CPU, control traffic,
# pulls, throughput and CPU per request; draws docs/scale.svg.
bench-scale: build
	$(BIN)/fleet scale --bin $(BIN) --plot docs/scale.svg

# The CPU each request costs, per kind of process (workers, NATS in a process of
# its own, simulator, producer, monitor), for each cell of CPU_KEYS keys ×
# CPU_WORKERS worker processes saturated by the producer; the cell CPU_PROFILE
# (keys x workers) also writes CPU profiles, summarised with `go tool pprof -top`.
# CPU_ALONE adds, for each number of keys, what the same messages cost NATS with
# nothing else in the way. The whole matrix takes about 13 minutes. CPU_RUNS=3
# runs it three times, one round after the other, and adds each cell's medians:
# this machine's speed varies by more than most changes do. CPU_AGAINST=DIR also
# runs each cell on the binaries in DIR (another build) and adds the ratios.
CPU_KEYS    ?= 5,50,100,200
CPU_WORKERS ?= 1,2,5
CPU_TIME    ?= 30s
CPU_WARMUP  ?= 10s
CPU_PROFILE ?= 100x5
CPU_RESULTS ?= keep
CPU_ALONE   ?= true
CPU_RUNS    ?= 1
CPU_AGAINST ?=
bench-cpu: build
	$(BIN)/fleet cpu --bin $(BIN) --go $(GO) --keys $(CPU_KEYS) --workers $(CPU_WORKERS) --duration $(CPU_TIME) --warmup $(CPU_WARMUP) --profile-cell "$(CPU_PROFILE)" --results $(CPU_RESULTS) --nats-alone=$(CPU_ALONE) --runs $(CPU_RUNS) --against "$(CPU_AGAINST)"

# The fleet on an embedded three-node cluster, one node stopped every 20 s.
bench-cluster: build
	$(BIN)/fleet chaos --bin $(BIN) --duration 2m

# The conservation soak (minutes; not part of `make test` or `make bench`): the seed
# load with a random fault every 20 s, then an audit of every request id.
SOAK_TIME   ?= 10m
bench-soak: build
	$(BIN)/fleet soak --bin $(BIN) --duration $(SOAK_TIME)

# The partition soak (minutes; not part of `make test` or `make bench`): the seed
# load on a three-node cluster whose routes run through TCP proxies, with random
# partitions (a minority node cut off, the leader isolated, a flapping link, a
# delayed link), then an audit of every request id. PARTITION_SEED replays a run.
PARTITION_TIME ?= 10m
PARTITION_SEED ?=
bench-partition: build
	$(BIN)/fleet partition --bin $(BIN) --duration $(PARTITION_TIME) $(if $(PARTITION_SEED),--seed $(PARTITION_SEED))
