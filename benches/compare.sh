#!/usr/bin/env bash
# `just bench-compare [ARGS]`: installs the peers when missing (Mosquitto and a font from apt,
# rumqttd with cargo into benches/.peers), builds the release binaries and runs
# halyard-compare, which writes benches/out/results.md, results.json and PNG charts.
# ARGS go to halyard-compare (e.g. --repeats 1 --duration 5 --brokers mosquitto,rumqttd).
set -euo pipefail
cd "$(dirname "$0")/.."
target="${CARGO_TARGET_DIR:-target}"
peers=benches/.peers
rumqttd_version=0.20.0

need=()
[ -x /usr/sbin/mosquitto ] || command -v mosquitto >/dev/null || need+=(mosquitto)
dpkg -s fonts-dejavu-core >/dev/null 2>&1 || need+=(fonts-dejavu-core)
command -v taskset >/dev/null || need+=(util-linux)
if [ ${#need[@]} -gt 0 ]; then
    apt-get update -qq
    DEBIAN_FRONTEND=noninteractive apt-get install -y -qq --no-install-recommends "${need[@]}"
fi
if [ ! -x "$peers/bin/rumqttd" ]; then
    echo "installing rumqttd $rumqttd_version into $peers (takes several minutes)" >&2
    # Not --locked: its lock file pins metrics 0.22.1, which Rust 1.95 rejects (E0521).
    # Its own target dir, so that its build neither mixes with nor locks the workspace's.
    CARGO_TARGET_DIR="$target/peers" cargo install rumqttd --version "$rumqttd_version" --root "$peers"
fi

# Build Halyard only when it is among the brokers (default: it is); default output folder
# benches/out unless ARGS name one.
with_halyard=1
out=(--out benches/out)
prev=""
for a in "$@"; do
    case "$a" in
        --brokers=*) [[ "$a" == *halyard* ]] || with_halyard=0 ;;
        --out|--out=*) out=() ;;
    esac
    if [ "$prev" = "--brokers" ] && [[ "$a" != *halyard* ]]; then with_halyard=0; fi
    prev="$a"
done
pkgs=(-p halyard-bench --bin halyard-load --bin halyard-compare)
if [ "$with_halyard" = 1 ]; then
    cargo build --release -p halyard-server --bin halyard
fi
cargo build --release "${pkgs[@]}"

mosquitto_bin="$(command -v mosquitto || echo /usr/sbin/mosquitto)"
exec "$target/release/halyard-compare" \
    --load-bin "$target/release/halyard-load" \
    --halyard-bin "$target/release/halyard" \
    --mosquitto-bin "$mosquitto_bin" \
    --rumqttd-bin "$peers/bin/rumqttd" \
    "${out[@]}" \
    --command "${BENCH_COMMAND:-just bench-compare $*}" \
    "$@"
