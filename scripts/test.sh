#!/usr/bin/env bash
# Runs every test of sav: formatting, lints, unit tests and the integration
# tests against real peers on loopback (sipp, tshark captures, espeak-ng).
#
# First installs, from Debian's packages, what cargo does not fetch and is
# missing: cmake (the build of libopus), sipp (sip-tester), espeak-ng, sox,
# tshark, kamailio, baresip, openssl, postgresql, chromium and its driver, promtool (Debian's
# prometheus package, without its recommendations); then starts the tests' PostgreSQL server (a cluster of
# its own on 127.0.0.1:25432, scripts/test-postgres.sh) and stops it at the
# end. Capturing on loopback and sipp's play_pcap_audio need root (or the
# matching capabilities).
set -euo pipefail
cd "$(dirname "$0")/.."

packages=()
command -v cmake >/dev/null 2>&1 || packages+=(cmake)
command -v sipp >/dev/null 2>&1 || packages+=(sip-tester)
command -v espeak-ng >/dev/null 2>&1 || packages+=(espeak-ng)
command -v sox >/dev/null 2>&1 || packages+=(sox)
command -v tshark >/dev/null 2>&1 || packages+=(tshark)
command -v kamailio >/dev/null 2>&1 || packages+=(kamailio)
command -v baresip >/dev/null 2>&1 || packages+=(baresip)
command -v openssl >/dev/null 2>&1 || packages+=(openssl)
command -v svmap >/dev/null 2>&1 || packages+=(sipvicious)
# systemd-analyze verifies the unit's layout (tests/install.rs); setpriv
# runs sav there as another user.
command -v systemd-analyze >/dev/null 2>&1 || packages+=(systemd)
command -v setpriv >/dev/null 2>&1 || packages+=(util-linux)
# The console's end-to-end tests drive Debian's Chromium headless through
# its WebDriver (tests/console.rs, the in_chromium_… test).
command -v chromium >/dev/null 2>&1 || packages+=(chromium)
command -v chromedriver >/dev/null 2>&1 || packages+=(chromium-driver)
ls /usr/lib/postgresql/*/bin/initdb >/dev/null 2>&1 || packages+=(postgresql)
command -v psql >/dev/null 2>&1 || packages+=(postgresql-client)
if [ ${#packages[@]} -gt 0 ]; then
  sudo=""
  [ "$(id -u)" -eq 0 ] || sudo="sudo"
  echo "installing: ${packages[*]}"
  $sudo apt-get update
  # tshark asks whether non-root users may capture: answer for it.
  echo "wireshark-common wireshark-common/install-setuid boolean false" | $sudo debconf-set-selections
  $sudo env DEBIAN_FRONTEND=noninteractive apt-get install -y "${packages[@]}"
fi
# promtool (the metrics' linter) comes with the Prometheus server; its
# recommended exporters are not needed.
if ! command -v promtool >/dev/null 2>&1; then
  sudo=""
  [ "$(id -u)" -eq 0 ] || sudo="sudo"
  [ ${#packages[@]} -gt 0 ] || $sudo apt-get update
  $sudo env DEBIAN_FRONTEND=noninteractive apt-get install -y --no-install-recommends prometheus
fi

scripts/test-postgres.sh start
trap 'scripts/test-postgres.sh stop' EXIT

# A one-off build: incremental compilation's cache would only add ~0.8 GB
# to the target directory.
export CARGO_INCREMENTAL="${CARGO_INCREMENTAL:-0}"

start=$(date +%s)
cargo fmt --all -- --check
cargo clippy --all-targets -- -D warnings
cargo test --all-targets
echo "sav: whole suite in $(( $(date +%s) - start )) s"
for report in target/pacing-report.txt target/hybrid-report.txt target/hybrid-slow-report.txt target/barge-in-report.txt target/flow-voice-report.txt target/metrics-report.txt target/sigterm-report.txt target/dispatcher-report.txt target/codecs-report.txt target/stt-stream-report.txt target/turn-end-report.txt target/echo-line-report.txt target/turn-words-report.txt target/echo-erle-report.txt target/sip-flood-report.txt target/unacked-invites-report.txt target/rfc4475-report.txt target/idle-tcp-report.txt; do
  if [ -f "$report" ]; then
    cat "$report"
  fi
done
