#!/usr/bin/env bash
# `just bench-floor [ROUNDS]`: the connect cases (10 000 connections, idle and with one
# subscription each) against halyard-floor, the least a broker does per connection (see
# benches/src/bin/halyard-floor.rs), beside Halyard on both backends and Mosquitto. Each run
# starts its broker fresh on CPU 0 with the generator on CPU 1, in rounds (floor, uring, epoll,
# Mosquitto, per case); prints and writes benches/out/floor.md: broker CPU per connection
# (of it kernel), connections per broker CPU-second, and the ratios to Mosquitto and to the
# floor. Needs Mosquitto (installed from apt when missing, as `just bench-compare` does).
set -euo pipefail
cd "$(dirname "$0")/.."
rounds="${1:-8}"
case "$rounds" in '' | *[!0-9]*) echo "usage: just bench-floor [ROUNDS]" >&2; exit 2 ;; esac
target="${CARGO_TARGET_DIR:-target}"
if ! [ -x /usr/sbin/mosquitto ] && ! command -v mosquitto >/dev/null; then
    apt-get update -qq
    DEBIAN_FRONTEND=noninteractive apt-get install -y -qq --no-install-recommends mosquitto
fi
mosquitto_bin=/usr/sbin/mosquitto
[ -x "$mosquitto_bin" ] || mosquitto_bin="$(command -v mosquitto)"
cargo build --release -q -p halyard-server --bin halyard \
    -p halyard-bench --bin halyard-load --bin halyard-floor
bin="$target/release"
work="$(mktemp -d)"
trap 'rm -rf "$work"' EXIT
mkdir -p benches/out
samples=benches/out/floor.jsonl
: >"$samples"

port=14000
run() { # run BROKER SUBSCRIBE(0|1) ROUND
    local broker=$1 sub=$2 round=$3 pid
    port=$((port + 2))
    case $broker in
        floor) taskset -c 0 "$bin/halyard-floor" "$port" >/dev/null 2>&1 & ;;
        mosquitto)
            printf 'listener %s 127.0.0.1\nallow_anonymous true\nset_tcp_nodelay true\npersistence false\nmax_connections -1\nlog_dest none\n' \
                "$port" >"$work/m.conf"
            taskset -c 0 "$mosquitto_bin" -c "$work/m.conf" >/dev/null 2>&1 & ;;
        halyard-uring | halyard-epoll)
            env HALYARD_LISTENERS__TCP__BIND="127.0.0.1:$port" HALYARD_ADMIN__BIND="127.0.0.1:$((port + 1))" \
                HALYARD_IO__THREADS=1 HALYARD_IO__BACKEND="${broker#halyard-}" HALYARD_LOG__LEVEL=warn \
                HALYARD_LIMITS__MAX_CONNECTIONS=250000 HALYARD_LIMITS__MAX_CONNECTIONS_PER_SOURCE=0 \
                HALYARD_LIMITS__CONNECT_RATE_PER_SOURCE=0 HALYARD_LIMITS__FLAP_MAX_CONNECTS=0 \
                HALYARD_LIMITS__AUTH_FAILURES_PER_SOURCE=0 \
                taskset -c 0 "$bin/halyard" run >/dev/null 2>&1 & ;;
    esac
    pid=$!
    for _ in $(seq 100); do
        (exec 3<>"/dev/tcp/127.0.0.1/$port") 2>/dev/null && break
        sleep 0.1
    done
    sleep 0.3
    local extra=()
    [ "$sub" = 1 ] && extra=(--subscribe)
    local out
    out=$(taskset -c 1 "$bin/halyard-load" --target "127.0.0.1:$port" --scenario conn \
        --clients 10000 --concurrency 64 --hold 1 --broker-pid "$pid" --json-only "${extra[@]}" \
        2>/dev/null || true)
    kill "$pid" 2>/dev/null || true
    wait "$pid" 2>/dev/null || true
    if [ -n "$out" ]; then
        printf '{"broker":"%s","subscribe":%s,"round":%s,"load":%s}\n' "$broker" "$sub" "$round" "$out" >>"$samples"
    else
        echo "no report from $broker (round $round)" >&2
    fi
}

for r in $(seq "$rounds"); do
    for sub in 0 1; do
        for b in floor halyard-uring halyard-epoll mosquitto; do
            run "$b" "$sub" "$r"
        done
    done
    echo "round $r of $rounds done" >&2
done

python3 - "$samples" "$rounds" <<'EOF' | tee benches/out/floor.md
import json, statistics as st, sys
rows = [json.loads(l) for l in open(sys.argv[1])]
print(f"# Connect cost against the floor ({sys.argv[2]} rounds, 10 000 connections each)\n")
print("Broker CPU per connection in us, median (min-max); kernel part median; connections per")
print("broker CPU-second; ratios of connections per CPU-s (medians).\n")
print("| case | broker | CPU us/conn | kernel us/conn | conn per CPU-s | x Mosquitto | x floor |")
print("|---|---|---|---|---|---|---|")
for sub, case in ((0, "conn-idle"), (1, "conn-sub")):
    med = {}
    for b in ("floor", "halyard-uring", "halyard-epoll", "mosquitto"):
        c = [r["load"]["conn"] for r in rows if r["broker"] == b and r["subscribe"] == sub]
        cpu = [x["broker_cpu_us_per_conn"] for x in c if x.get("broker_cpu_us_per_conn")]
        ker = [x["broker_sys_us_per_conn"] for x in c if x.get("broker_sys_us_per_conn") is not None]
        if cpu:
            med[b] = (st.median(cpu), min(cpu), max(cpu), st.median(ker) if ker else float("nan"))
    for b, (m, lo, hi, k) in med.items():
        xm = med["mosquitto"][0] / m if "mosquitto" in med else float("nan")
        xf = med["floor"][0] / m if "floor" in med else float("nan")
        print(f"| {case} | {b} | {m:.1f} ({lo:.0f}-{hi:.0f}) | {k:.1f} | {1e6 / m:,.0f} | {xm:.2f}x | {xf:.2f}x |")
EOF
