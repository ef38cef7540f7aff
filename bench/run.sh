#!/usr/bin/env bash
# Builds the daemon and the benchmark harness (release, same target dir) and runs the
# benchmark. Arguments go to the harness: --quick, --rounds N, --duration SECS,
# --only gen1,gen64,stream32,chat64,nolog64,keys10k,keys10knolog,slow,floor64, --perf. Tables go to stdout.
#   bench/run.sh | tee bench/last-run.md
set -euo pipefail
cd "$(dirname "$0")/.."

if ! command -v wrk >/dev/null; then
    if [ "$(id -u)" = 0 ]; then
        echo "bench: installing wrk" >&2
        apt-get install -y wrk >&2 || { apt-get update >&2 && apt-get install -y wrk >&2; }
    else
        echo "bench: wrk is missing; install it with: sudo apt-get install -y wrk" >&2
        exit 1
    fi
fi

# 1,000 held streams need ~2,000 descriptors in the daemon and ~1,000 in the harness.
ulimit -n 65536 2>/dev/null || ulimit -n "$(ulimit -Hn)"

# With --perf, keep symbol names in the binary (the code is the same; only `strip` differs).
for arg in "$@"; do
    if [ "$arg" = --perf ]; then export CARGO_PROFILE_RELEASE_STRIP=false; fi
done

cargo build --release --bins --example bench >&2
exec "${CARGO_TARGET_DIR:-target}/release/examples/bench" "$@"
