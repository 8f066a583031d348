# plughost: `make run` and `make test` work on a fresh machine; they install what they need.
CARGO ?= cargo
RELEASE_BIN := target/release/plughost

.PHONY: all build release run test bench check fmt clean

all: build

# Debug build of every workspace binary (the end-to-end tests start target/debug/plughost).
build:
	$(CARGO) build --workspace --all-targets

release:
	$(CARGO) build --release -p plughost

# Starts plughost on :9090 (admin on 127.0.0.1:9091) with the example plugins in ./plugins.
run: release
	$(RELEASE_BIN) --plugins-dir plugins

# Every test: unit tests in each crate and the end-to-end tests against the real binary.
# Building --all-targets also compiles the bench binaries, so they cannot rot.
test: build
	$(CARGO) fmt --all -- --check
	$(CARGO) test --workspace

# Throughput against nginx and a bare hyper server; see bench/run.sh. BENCH_QUICK=1 is shorter.
bench:
	bash bench/run.sh

fmt:
	$(CARGO) fmt --all

clean:
	$(CARGO) clean
