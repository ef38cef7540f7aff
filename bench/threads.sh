#!/usr/bin/env bash
# CPU per request of each daemon thread (serving threads, the log writer) during one
# proxied generateContent c=64 run: /proc/PID/task/*/stat utime+stime read twice, 5 s
# apart, divided by the requests wrk counted. More precise than whole-process ratios for
# small parts such as the log writer.
#   bench/threads.sh DAEMON_BINARY [SCENARIO]   (SCENARIO: gen64 (default), nolog64, keys10k, ...)
# Needs the harness built: cargo build --profile harness --example bench
set -euo pipefail
cd "$(dirname "$0")/.."
bin=$(realpath "$1")
scenario=${2:-gen64}
out=$(mktemp)
trap 'rm -f "$out"' EXIT
"${CARGO_TARGET_DIR:-target}/harness/examples/bench" --daemon "$bin" --only "$scenario" \
    --rounds 1 --duration 10 >"$out" 2>&1 &
until grep -q "direct :" "$out" 2>/dev/null; do sleep 0.2; done
sleep 2 # into the proxied run
pid=$(pgrep -f "^$bin " | head -1)
snap() {
    for t in /proc/"$pid"/task/*; do
        echo "$(cat "$t/comm") $(awk '{print $14+$15}' "$t/stat")"
    done | awk '{a[$1]+=$2} END {for (k in a) print k, a[k]}' | sort
}
s1=$(snap); t1=$(date +%s.%N)
sleep 5
s2=$(snap); t2=$(date +%s.%N)
wait
rps=$(grep "round 1 proxied" "$out" | awk '{print $4}')
ticks=$(getconf CLK_TCK)
echo "proxied req/s: $rps"
join <(echo "$s1") <(echo "$s2") | awk -v r="$rps" -v hz="$ticks" -v dt="$(echo "$t2 - $t1" | bc)" \
    '$3 > $2 {printf "%-16s %6.2f us/req\n", $1, ($3-$2)/hz*1e6/(r*dt)}'
