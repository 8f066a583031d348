# plughost: `make run` and `make test` work on a fresh machine; they install what they need.
CARGO ?= cargo
RELEASE_BIN := target/release/plughost

.PHONY: all setup build release plugins run test bench fmt clean

all: build

# Toolchain pieces a fresh machine lacks: the WebAssembly target for guest plugins.
setup:
	@rustup target list --installed | grep -qx wasm32-wasip2 || rustup target add wasm32-wasip2

# Debug build of every workspace binary (the end-to-end tests start target/debug/plughost).
# The tests crate's build script also builds the guest plugins.
build: setup
	$(CARGO) build --workspace --all-targets

release:
	$(CARGO) build --release -p plughost

# The example and test plugins, as wasm32-wasip2 components in plugins/target/wasm32-wasip2/release.
plugins: setup
	$(CARGO) build --release --target wasm32-wasip2 --manifest-path plugins/Cargo.toml

# Starts plughost on :9090 (admin on 127.0.0.1:9091) with the example plugins
# (examples/plughost.toml: headers and ratelimit filters, hello on /hello).
run: release plugins
	$(RELEASE_BIN) --config examples/plughost.toml

# Every test: unit tests in each crate and the end-to-end tests against the real binary.
# Building --all-targets also compiles the bench binaries, so they cannot rot.
test: build
	$(CARGO) fmt --all -- --check
	$(CARGO) test --workspace

# Throughput against nginx and a bare hyper server; see bench/run.sh. BENCH_QUICK=1 is shorter.
bench: setup
	bash bench/run.sh

fmt:
	$(CARGO) fmt --all

clean:
	$(CARGO) clean
