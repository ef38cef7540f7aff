#!/usr/bin/env bash
# User-space instructions per proxied request, counted by callgrind: repeatable for the
# same binary whatever else the machine is doing, so it tells small changes apart where
# the wrk figures (±1-2 points between runs) cannot. Kernel time is not counted.
#   bench/instructions.sh DAEMON_BINARY [PATH]
# PATH defaults to a native generateContent; for SSE use
#   '/v1beta/models/gemini-2.5-flash:streamGenerateContent?alt=sse'.
# Needs valgrind and wrk, and the harness built (for the fake upstream):
#   cargo build --profile harness --example bench
# Build the daemon with symbols to read the profile it leaves (path printed at the end):
#   CARGO_PROFILE_HARNESS_STRIP=false CARGO_PROFILE_HARNESS_DEBUG=line-tables-only \
#     cargo build --profile harness --bin gemini-balance
#   callgrind_annotate --auto=no DIR/cg.out.1
set -euo pipefail
cd "$(dirname "$0")/.."
bin=$(realpath "$1")
path=${2:-/v1beta/models/gemini-2.5-flash:generateContent}
dir=$(mktemp -d)
pids=()
trap 'kill "${pids[@]}" 2>/dev/null || true' EXIT

"${CARGO_TARGET_DIR:-target}/harness/examples/bench" upstream >"$dir/upstream.out" &
pids+=($!)
until grep -q "listening on" "$dir/upstream.out" 2>/dev/null; do sleep 0.1; done
upstream=$(awk '{print $3}' "$dir/upstream.out")

user_key=gb-bench-0123456789abcdef0123456789
{
    printf '[upstream]\nbase_url = "http://%s"\nallow_plain_http = true\n\n' "$upstream"
    printf '[pool]\nqueue_wait = "0s"\n\n[logs]\nenabled = true\n'
    for i in $(seq 0 9); do printf '[[upstream_keys]]\nkey = "AIzaBENCH-key-%026d"\n' "$i"; done
    printf '\n[[users]]\nname = "bench"\nkey = "%s"\n' "$user_key"
} >"$dir/config.toml"
chmod 600 "$dir/config.toml"

GEMINI_BALANCE_ADMIN_PASSWORD=bench-admin-password \
    valgrind --tool=callgrind --callgrind-out-file="$dir/cg.out" "$bin" serve \
    --config "$dir/config.toml" --listen 127.0.0.1:0 \
    --log-level "warn,gemini_balance=info,access=warn" --data-dir "$dir/data" \
    2>"$dir/daemon.err" &
vg=$!
pids+=("$vg")
until grep -q "listening on" "$dir/daemon.err" 2>/dev/null; do sleep 0.2; done
addr=$(grep -o "listening on [0-9.:]*" "$dir/daemon.err" | head -1 | awk '{print $3}')

export BENCH_BODY='{"contents":[{"parts":[{"text":"hi"}]}]}'
export BENCH_HEADER="x-goog-api-key: $user_key"
run() { wrk -t1 -c8 -d"$1" -s bench/wrk.lua "http://$addr$path"; }
run 4s >/dev/null # warm: connections, pools, the log writer's first batches
callgrind_control -z "$vg" >/dev/null 2>&1
requests=$(run 8s | grep -o "BENCH requests=[0-9]*" | cut -d= -f2)
callgrind_control -d "$vg" >/dev/null 2>&1
until [ -s "$dir/cg.out.1" ] && grep -q "^summary:" "$dir/cg.out.1"; do sleep 0.2; done
instructions=$(grep -h "^summary:" "$dir/cg.out.1" | awk '{print $2}')
echo "requests: $requests; instructions per request: $((instructions / requests)) (all daemon threads, user space)"
echo "profile: $dir/cg.out.1"
