#!/usr/bin/env bash
# A Vulkan driver for the WebGPU test suite: Mesa's software rasteriser (llvmpipe) from
# `mesa-vulkan-drivers`. Debian bookworm's own Mesa (22.3) is refused by Dawn
# ("shaderUniform*ArrayDynamicIndexing required"), so on bookworm it comes from bookworm-backports
# (Mesa 25). Harmless everywhere: where it cannot install (not root, no apt, no network) it says
# so and exits 3 without changing anything else; the WebGPU tests then skip, saying why.
# Exit 0: the driver is there (already, or installed now).
set -uo pipefail

say() { echo "install-vulkan: $*" >&2; }

mesa_major() { dpkg-query -W -f='${Version}' mesa-vulkan-drivers 2>/dev/null | sed -E 's/^([0-9]+:)?([0-9]+).*/\2/'; }

have=$(mesa_major)
if [[ -n "$have" && "$have" -ge 24 ]]; then
  say "mesa-vulkan-drivers $(dpkg-query -W -f='${Version}' mesa-vulkan-drivers) already installed"
  exit 0
fi
if ! command -v apt-get >/dev/null 2>&1; then
  say "no apt-get here: install a Vulkan driver yourself (Mesa >= 24 'mesa-vulkan-drivers', or the GPU vendor's) to run the WebGPU tests"
  exit 3
fi
if [[ $(id -u) -ne 0 ]]; then
  say "not root: run 'sudo scripts/install-vulkan.sh' to install mesa-vulkan-drivers (the WebGPU tests skip without it)"
  exit 3
fi

codename=$( . /etc/os-release 2>/dev/null && echo "${VERSION_CODENAME:-}")
target=()
if [[ "$codename" == "bookworm" ]]; then
  list=/etc/apt/sources.list.d/bookworm-backports.sources
  if ! grep -rqs "bookworm-backports" /etc/apt/sources.list /etc/apt/sources.list.d/; then
    say "adding bookworm-backports to apt's sources ($list)"
    cat > "$list" <<'SOURCES'
Types: deb
URIs: http://deb.debian.org/debian
Suites: bookworm-backports
Components: main
Signed-By: /usr/share/keyrings/debian-archive-keyring.gpg
SOURCES
  fi
  target=(-t bookworm-backports)
fi

export DEBIAN_FRONTEND=noninteractive
if ! apt-get update -q >/dev/null 2>&1; then
  say "apt-get update failed (no network to the Debian mirrors?); the WebGPU tests will skip"
  exit 3
fi
if ! apt-get install -y -q --no-install-recommends "${target[@]}" mesa-vulkan-drivers >/dev/null 2>&1; then
  say "apt-get install mesa-vulkan-drivers failed; the WebGPU tests will skip"
  exit 3
fi
say "installed mesa-vulkan-drivers $(dpkg-query -W -f='${Version}' mesa-vulkan-drivers)"
