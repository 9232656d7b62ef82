#!/bin/sh
# Compiles the XDP program by hand (cargo does the same in broker/xdp/build.rs).
# Usage: ebpf/build.sh [OUTPUT.o]   (default: ebpf/halyard_xdp.o)
set -eu
here=$(cd "$(dirname "$0")" && pwd)
out=${1:-"$here/halyard_xdp.o"}
clang=${HALYARD_CLANG:-clang-19}
if ! command -v "$clang" >/dev/null 2>&1 || [ ! -f /usr/include/bpf/bpf_helpers.h ]; then
    echo "error: $clang or the libbpf headers are missing; install them with: apt-get install -y clang-19 libbpf-dev" >&2
    exit 1
fi
case "$(uname -m)" in
    aarch64) arch_include=/usr/include/aarch64-linux-gnu ;;
    *) arch_include=/usr/include/x86_64-linux-gnu ;;
esac
exec "$clang" -O2 -g -target bpf -Wall -Werror "-I$arch_include" -c "$here/halyard_xdp.c" -o "$out"
