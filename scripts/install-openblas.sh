#!/usr/bin/env bash
# OpenBLAS for the wasm backend's matrix products (src/backend/openblas.ts): Debian's
# libopenblas-dev (headers and library; the native addon is then built by `npm ci` /
# `npm run build-native`). Harmless everywhere: where it cannot install (not root, no apt, no
# network) it says so and exits 3 without changing anything; PruneLab then runs its products on
# the wasm backend's XNNPACK and the OpenBLAS tests skip, saying why.
# Exit 0: OpenBLAS's headers and library are there (already, or installed now).
set -uo pipefail

say() { echo "install-openblas: $*" >&2; }

if dpkg-query -W -f='${Status}' libopenblas-dev 2>/dev/null | grep -q "install ok installed"; then
  say "libopenblas-dev $(dpkg-query -W -f='${Version}' libopenblas-dev) already installed"
  exit 0
fi
if ! command -v apt-get >/dev/null 2>&1; then
  say "no apt-get here: install OpenBLAS (headers and library) yourself, then run 'npm run build-native'"
  exit 3
fi
if [[ $(id -u) -ne 0 ]]; then
  say "not root: run 'sudo scripts/install-openblas.sh' (or 'sudo apt-get install libopenblas-dev'), then 'npm run build-native'"
  exit 3
fi
export DEBIAN_FRONTEND=noninteractive
if ! apt-get update -q >/dev/null 2>&1; then
  say "apt-get update failed (no network to the Debian mirrors?); products stay on XNNPACK"
  exit 3
fi
if ! apt-get install -y -q --no-install-recommends libopenblas-dev >/dev/null 2>&1; then
  say "apt-get install libopenblas-dev failed; products stay on XNNPACK"
  exit 3
fi
say "installed libopenblas-dev $(dpkg-query -W -f='${Version}' libopenblas-dev)"
