#!/usr/bin/env bash
# Runs sav on the repository's sav.toml (the README's first command):
# builds it in release mode and serves (`sav serve`, extra arguments
# passed on).
#
# Building needs one thing cargo does not fetch: cmake, for the libopus
# that the opus crate builds from its own source. It is installed from
# Debian's packages when missing.
set -euo pipefail
cd "$(dirname "$0")/.."

if ! command -v cmake >/dev/null 2>&1; then
  sudo=""
  [ "$(id -u)" -eq 0 ] || sudo="sudo"
  echo "installing: cmake"
  $sudo apt-get update
  $sudo env DEBIAN_FRONTEND=noninteractive apt-get install -y cmake
fi

exec cargo run --release -- serve "$@"
