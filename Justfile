# Halyard: the single entry point for humans and CI. Private helpers start with `_`.

set shell := ["bash", "-euo", "pipefail", "-c"]

# List the recipes.
default:
    @just --list

# Start a single-node broker on the embedded default config (MQTT 127.0.0.1:1883, admin 127.0.0.1:8081).
run *ARGS:
    cargo run --release -p halyard-server --bin halyard -- run {{ARGS}}

# Install what the tests need, lint, run every test (crates, integration on both io backends, XDP, images).
test: _deps
    #!/usr/bin/env bash
    set -euo pipefail
    cargo fmt --all --check
    # The image's static release build starts first, in the background at the lowest CPU
    # priority: cargo locks each profile directory on its own, so it shares no lock with the
    # debug builds, and it takes the CPU the socket tests leave idle (they mostly wait on
    # sockets). test-image then finds it built. Its output goes to image-broker-build.log in the
    # target dir (printed if it fails).
    tdir="${CARGO_TARGET_DIR:-target}"
    mkdir -p "$tdir"
    blog="$tdir/image-broker-build.log"
    nice -n 19 images/build-broker.sh >"$blog" 2>&1 &
    bpid=$!
    trap 'kill "$bpid" 2>/dev/null || true' EXIT
    # Lint while building: clippy's driver compiles the workspace's crates (it is rustc plus
    # the lints, what `cargo clippy` runs in check mode), so the dependencies are compiled once
    # instead of checked for `just lint` and then built; `--all-targets` lints what `just lint`
    # lints. CLIPPY_ARGS is how `cargo clippy` hands its `-- -D warnings` to the driver; the
    # canary fails the run if this toolchain's driver no longer denies a warning that way.
    # Only the debug cargo calls below get the wrapper (`lint_env`): the image's release build
    # must not, or its workspace crates would hash differently and be built again.
    driver="$(rustc --print sysroot)/bin/clippy-driver"
    [ -x "$driver" ] || { echo "needs clippy: rustup component add clippy" >&2; exit 1; }
    clippy_args="-D__CLIPPY_HACKERY__warnings__CLIPPY_HACKERY__"
    printf 'pub fn canary(v: &Vec<u8>) -> usize {\n    v.len()\n}\n' >"$tdir/clippy-canary.rs"
    if CLIPPY_ARGS="$clippy_args" CARGO_PRIMARY_PACKAGE=1 "$driver" rustc --edition 2024 \
        --crate-type lib --emit=metadata --out-dir "$tdir" "$tdir/clippy-canary.rs" \
        >"$tdir/clippy-canary.log" 2>&1 || ! grep -q 'clippy::ptr_arg' "$tdir/clippy-canary.log"; then
        cat "$tdir/clippy-canary.log"
        echo "clippy-driver did not deny the canary's warning through CLIPPY_ARGS" >&2
        exit 1
    fi
    lint_env=(env RUSTC_WORKSPACE_WRAPPER="$driver" CLIPPY_ARGS="$clippy_args")
    "${lint_env[@]}" cargo test --workspace --all-targets --no-run
    # Every cargo call selects the whole workspace: cargo resolves features per selection, and
    # `-p` or `--exclude` would compile ~75 dependencies and every workspace crate a second time
    # with other features. The build above made everything (target/debug/halyard included); the
    # first run runs every test, halyard-tests against io_uring; the second runs only
    # halyard-tests' targets (`--test`), against epoll. Neither builds anything. (The name
    # `cluster` also selects halyard-cluster's own cluster test, which so runs twice.)
    HALYARD_TEST_BACKEND=uring "${lint_env[@]}" cargo test --workspace
    suites=()
    for f in tests/tests/*.rs; do suites+=(--test "$(basename "$f" .rs)"); done
    HALYARD_TEST_BACKEND=epoll "${lint_env[@]}" cargo test --workspace "${suites[@]}"
    echo "waiting for the image's broker build (log: $blog)"
    if ! wait "$bpid"; then
        cat "$blog"
        echo "images/build-broker.sh failed" >&2
        exit 1
    fi
    trap - EXIT
    just test-image

# rustfmt and clippy with warnings denied.
lint:
    cargo fmt --all --check
    cargo clippy --workspace --all-targets -- -D warnings

# Run the cargo-fuzz targets for SECS seconds each (needs the nightly toolchain; installs cargo-fuzz).
fuzz SECS="60":
    cargo +nightly fuzz --version >/dev/null 2>&1 || cargo install cargo-fuzz --locked
    mkdir -p target/fuzz-corpus/decode target/fuzz-corpus/session_input
    cd broker/codec && cargo +nightly fuzz run decode ../../target/fuzz-corpus/decode fuzz/corpus/decode -- -max_total_time={{SECS}}
    cd broker/session && cargo +nightly fuzz run session_input ../../target/fuzz-corpus/session_input fuzz/corpus/session_input -- -max_total_time={{SECS}}

# Build the appliance disk image: `just build-image role=core` or `role=replicant` (default core); output in images/out/.
build-image role="core":
    images/install-deps.sh
    images/build.sh "{{role}}"

# Boot an appliance image under QEMU/OVMF (TCG): MQTT on 127.0.0.1:11883, admin on 127.0.0.1:18081.
boot-image role="core":
    images/boot.sh "{{role}}"

# Build both appliance images and boot-test them (MQTT round trip, /metrics, sysctl gauges, reboot on core),
# then boot both together as a two-node cluster (message delivered across).
test-image:
    images/install-deps.sh
    images/build.sh core
    images/build.sh replicant
    images/test-repro.sh replicant
    images/test-boot.sh core
    images/test-boot.sh replicant
    images/test-cluster.sh

# Install the apt and pip packages the tests need when they are missing.
_deps:
    #!/usr/bin/env bash
    set -euo pipefail
    need=()
    for p in mosquitto mosquitto-clients clang-19 libbpf-dev iproute2 curl; do
        dpkg -s "$p" >/dev/null 2>&1 || need+=("$p")
    done
    if [ ${#need[@]} -gt 0 ]; then
        apt-get update -qq
        DEBIAN_FRONTEND=noninteractive apt-get install -y -qq --no-install-recommends "${need[@]}"
    fi
    python3 -c 'import paho.mqtt' 2>/dev/null || python3 -m pip install -q 'paho-mqtt>=2,<3'
    images/install-deps.sh

# Criterion micro-benchmarks (codec; topic trie with 1M filters, HALYARD_BENCH_FILTERS to shrink).
bench *ARGS:
    cargo bench -p halyard-bench {{ARGS}}

# Halyard vs Mosquitto vs rumqttd side by side (installs the peers if missing); writes benches/out/.
bench-compare *ARGS:
    benches/compare.sh {{ARGS}}

# Method in RESULTS.md "Thread scaling": the quota keeps the broker, not the generator on the same cores, the limit.
# io.threads = 2 against 1 under a cgroup CPU quota of 0.4 CPU per I/O thread; writes benches/out-scaling/.
bench-scaling *ARGS:
    BENCH_COMMAND="just bench-scaling {{ARGS}}" benches/compare.sh \
        --brokers halyard-uring,halyard-uring-t2,halyard-epoll,halyard-epoll-t2 \
        --cases fanin-q0,fanin-q1,fanout-q0,fanout-q1,p2p-q0,p2p-q1 \
        --cpu-per-thread 0.4 --window 256 --broker-cpus 0,1 --load-cpus 0,1 --workers 2 \
        --out benches/out-scaling {{ARGS}}

# Connect cost against halyard-floor (the least a broker does per connection) beside Halyard on
# both backends and Mosquitto, ROUNDS rounds (default 8); writes benches/out/floor.md.
bench-floor ROUNDS="8":
    benches/floor.sh {{ROUNDS}}

# Cluster benchmark (issue 8): 3 cores on 127.0.0.61-63, cross-node vs same-node p2p (QoS 0/1) and
# the route-commit rate batched/unbatched; builds the release binaries, writes benches/out/cluster/.
bench-cluster *ARGS:
    cargo build --release -p halyard-server --bin halyard
    cargo build --release -p halyard-bench --bin halyard-load --bin halyard-cluster
    "${CARGO_TARGET_DIR:-target}/release/halyard-cluster" \
        --load-bin "${CARGO_TARGET_DIR:-target}/release/halyard-load" \
        --halyard-bin "${CARGO_TARGET_DIR:-target}/release/halyard" \
        --out benches/out/cluster --command "just bench-cluster {{ARGS}}" {{ARGS}}
