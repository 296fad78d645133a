# maddy-notify developer entry points. CI runs `make check` (see .ci/run).
#
#   make build      build build/maddy: maddy v0.8.2 with storage.notify linked in
#   make demo       build, set up demo/ and run a demo server (scripts/demo.sh)
#   make test       build build/maddy, then run all tests with -race against it
#   make vet        go vet ./...
#   make fmt-check  fail listing the files gofmt would change
#   make check      fmt-check, vet and test
#   make soak       build, then the long soaks with -race: consistency
#                   (TestSoak) and numbering under unserialised writers
#                   (TestSoakNumbering), SOAK=5m each by default, in
#                   parallel (docs/guarantees.md)
#   make clean      remove build/ and demo/

GO     ?= go
BINARY := build/maddy

.PHONY: all build demo test vet fmt-check check clean soak

all: build

# Always rebuilt: the Go build cache makes an unchanged rebuild cheap, and
# make cannot see which of the module's sources the binary depends on.
build:
	$(GO) run ./cmd/maddy-build -o $(BINARY)

demo:
	bash scripts/demo.sh

test: build
	MADDY_NOTIFY_BINARY=$(abspath $(BINARY)) $(GO) test -race -count=1 -timeout 40m ./...

# The soaks need PostgreSQL as `make test` does (testkit.Postgres); set
# SOAK_SEED to replay the random choices of an earlier run. `-run
# '^TestSoak'` takes every TestSoak* test: the focused ones have fixed
# durations, TestSoak and TestSoakNumbering run for SOAK. SOAK_TIMEOUT
# bounds the whole run (go test -timeout) in case something hangs.
SOAK         ?= 5m
SOAK_TIMEOUT ?= 60m
soak: build
	NOTIFY_SOAK=$(SOAK) NOTIFY_SOAK_SEED=$(SOAK_SEED) MADDY_NOTIFY_BINARY=$(abspath $(BINARY)) \
		$(GO) test -race -count=1 -timeout $(SOAK_TIMEOUT) -run '^TestSoak' -v ./tests

vet:
	$(GO) vet ./...

fmt-check:
	@files="$$(gofmt -l .)"; \
	if [ -n "$$files" ]; then \
		echo "gofmt would change these files:"; \
		echo "$$files"; \
		exit 1; \
	fi

check: fmt-check vet test

clean:
	rm -rf build demo

# Benchmarks against stock maddy (and Dovecot, when installed): builds both
# maddy binaries, runs every scenario and writes docs/benchmarks.md
# (cmd/notify-bench; about 5 minutes). BENCHFLAGS=-quick for a smoke run
# of every scenario in under 2 minutes (write it elsewhere with -o).
.PHONY: bench
bench:
	$(GO) run ./cmd/notify-bench -o docs/benchmarks.md $(BENCHFLAGS)
