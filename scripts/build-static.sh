#!/usr/bin/env bash
# Builds a fully static x86_64 Linux binary (glibc with +crt-static, rustls, no OpenSSL)
# that runs on a machine without Rust, then checks that it is static and starts in an
# empty environment. Usage: scripts/build-static.sh [--profile release|ci-static]
set -euo pipefail
cd "$(dirname "$0")/.."
profile=release
[ "${1:-}" = "--profile" ] && profile=$2
dir=$profile; [ "$profile" = dev ] && dir=debug
export RUSTFLAGS="-C target-feature=+crt-static"
cargo build --profile "$profile" --bin gemini-balance --target x86_64-unknown-linux-gnu \
  --target-dir target/static
bin=target/static/x86_64-unknown-linux-gnu/$dir/gemini-balance
if ldd "$bin" 2>&1 | grep -q 'not a dynamic executable\|statically linked'; then
  echo "static: yes"
else
  echo "static: NO"; ldd "$bin"; exit 1
fi
env -i "$bin" --version
tmp=$(mktemp -d); trap 'rm -rf "$tmp"' EXIT
env -i "$bin" check-config --data-dir "$tmp"
echo "size: $(stat -c %s "$bin") bytes ($(du -h "$bin" | cut -f1))"
echo "binary: $bin"
