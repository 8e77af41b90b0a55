#!/usr/bin/env bash
# Runs every fuzz target of fuzz/ for a bounded time each (default 60 s;
# FUZZ_SECS to change it, or name targets as arguments), seeded from
# fuzz/seeds/ and, when the RFC 4475 wire test has run, its messages.
# Not part of the test suite. Needs a nightly toolchain (rustup) and
# cargo-fuzz, which it installs when missing. A crash leaves its input in
# fuzz/artifacts/<target>/ and fails the script: keep it as a regression
# test (tests/fuzz_regressions.rs) once fixed.
set -euo pipefail
cd "$(dirname "$0")/.."

secs="${FUZZ_SECS:-60}"
command -v cargo-fuzz >/dev/null 2>&1 || cargo install cargo-fuzz --locked
rustup toolchain list | grep -q nightly || rustup toolchain install nightly --profile minimal

targets=("$@")
if [ ${#targets[@]} -eq 0 ]; then
  targets=(sip_message sdp rtp_inbound rtcp srtp_unprotect provider_streams config admission)
fi

report=target/fuzz-report.txt
mkdir -p target
: > "$report"
failed=0
for target in "${targets[@]}"; do
  corpus="fuzz/corpus/$target"
  mkdir -p "$corpus"
  cp -n fuzz/seeds/"$target"/* "$corpus"/ 2>/dev/null || true
  if [ "$target" = sip_message ] && [ -d target/rfc4475 ]; then
    cp -n target/rfc4475/*.sip "$corpus"/ 2>/dev/null || true
  fi
  echo "== $target: ${secs} s"
  start=$(date +%s)
  if (cd fuzz && cargo +nightly fuzz run "$target" -- -max_total_time="$secs" -rss_limit_mb=2048) > "target/fuzz-$target.log" 2>&1; then
    outcome="no crash"
  else
    outcome="CRASH (see target/fuzz-$target.log and fuzz/artifacts/$target/)"
    failed=1
  fi
  runs=$(grep -oE 'Done [0-9]+ runs' "target/fuzz-$target.log" | grep -oE '[0-9]+' | tail -1 || true)
  echo "$target: $(( $(date +%s) - start )) s, ${runs:-0} runs, corpus $(ls "$corpus" | wc -l) inputs, $outcome" | tee -a "$report"
done
exit $failed
