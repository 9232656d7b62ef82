# Halyard: the single entry point for humans and CI. Private helpers start with `_`.

set shell := ["bash", "-euo", "pipefail", "-c"]

# List the recipes.
default:
    @just --list

# Start a single-node broker on the embedded default config (MQTT 127.0.0.1:1883, admin 127.0.0.1:8081).
run *ARGS:
    cargo run --release -p halyard-server --bin halyard -- run {{ARGS}}

# Install what the tests need, then lint and run every test (unit, property, corpus, integration on both io backends, XDP, image boot).
test: _deps lint
    cargo build -p halyard-server --bin halyard
    cargo test --workspace --exclude halyard-tests
    HALYARD_TEST_BACKEND=uring cargo test -p halyard-tests
    HALYARD_TEST_BACKEND=epoll cargo test -p halyard-tests

# rustfmt and clippy with warnings denied.
lint:
    cargo fmt --all --check
    cargo clippy --workspace --all-targets -- -D warnings

# Install the apt and pip packages the tests need when they are missing.
_deps:
    #!/usr/bin/env bash
    set -euo pipefail
    need=()
    for p in mosquitto mosquitto-clients clang-19 libbpf-dev iproute2; do
        dpkg -s "$p" >/dev/null 2>&1 || need+=("$p")
    done
    if [ ${#need[@]} -gt 0 ]; then
        apt-get update -qq
        DEBIAN_FRONTEND=noninteractive apt-get install -y -qq --no-install-recommends "${need[@]}"
    fi
    python3 -c 'import paho.mqtt' 2>/dev/null || python3 -m pip install -q 'paho-mqtt>=2,<3'
