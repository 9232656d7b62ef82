#!/usr/bin/env bash
# The appliance's broker binary: a static release build of halyard-server for
# x86_64-unknown-linux-gnu in $CARGO_TARGET_DIR (default target/). Prints nothing but cargo's
# output; the binary is $CARGO_TARGET_DIR/x86_64-unknown-linux-gnu/release/halyard.
#
# build.sh runs it for every image; `just test` also runs it early, beside the socket tests, so
# that test-image finds the binary built (the same flags give the same cargo fingerprint, so
# build.sh's own run is then a no-op).
set -euo pipefail
ROOT="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
cd "$ROOT"
# The same environment build.sh gives it: cargo reruns ring's and jemalloc's build scripts
# (and rebuilds everything above them) when SOURCE_DATE_EPOCH differs, so a run from `just
# test` must see the value build.sh will export, or test-image would build the broker again.
export LC_ALL=C TZ=UTC
if [[ -z "${SOURCE_DATE_EPOCH:-}" ]]; then
    SOURCE_DATE_EPOCH=$(git -C "$ROOT" log -1 --format=%ct 2>/dev/null || echo 1767225600)
fi
export SOURCE_DATE_EPOCH
# Paths in panic messages and debug info are remapped so the binary does not depend on where the
# checkout or the cargo home is.
RUSTFLAGS="-C target-feature=+crt-static --remap-path-prefix=$ROOT=/halyard --remap-path-prefix=${CARGO_HOME:-$HOME/.cargo}=/cargo" \
    CARGO_TARGET_DIR="${CARGO_TARGET_DIR:-$ROOT/target}" \
    exec cargo build --release -p halyard-server --target x86_64-unknown-linux-gnu
