#!/usr/bin/env bash
# What a machine without network access needs to run this checkout (a lent GPU machine, an
# air-gapped cluster node of the same architecture and a glibc at least as new), packed from this
# machine after `npm ci`: Node itself, node_modules without what no command loads (TypeScript,
# type declarations, source maps, other platforms' dawn.node, tfjs's browser bundles), the native
# addon with the OpenBLAS, gfortran and quadmath libraries it links, optionally a copy of the
# shared data, and env.sh. The H200 run of README *GPU paths* was made from such a bundle. Written
# here on 2026-12-04 with the shared data: 51 MB, 64 s; unpacked into a fresh clone,
# `npm run gpu-check -- --quick --allow-software` ran from it.
#
#   scripts/offline-bundle.sh OUT.tar.xz [SHARED_DATA_DIR]
#
# There, in a checkout of the same commit:
#   mkdir -p /tmp/prunelab-offline && tar -xJf OUT.tar.xz -C /tmp/prunelab-offline
#   /tmp/prunelab-offline/install.sh .      # puts node_modules and native/build into the checkout
#   . /tmp/prunelab-offline/env.sh && npm run gpu-check
# (WebGPU also needs the Vulkan loader, Debian's `libvulkan1`, and the GPU's Vulkan driver.)
set -euo pipefail
cd "$(dirname "$0")/.."

out=${1:?usage: scripts/offline-bundle.sh OUT.tar.xz [SHARED_DATA_DIR]}
shared=${2:-}
[[ -d node_modules ]] || { echo "offline-bundle: no node_modules here: run npm ci first" >&2; exit 2; }
[[ -z "$shared" || -d "$shared" ]] || { echo "offline-bundle: $shared is not a folder" >&2; exit 2; }
[[ -e "$out" ]] && { echo "offline-bundle: $out exists: give a new file name" >&2; exit 2; }

stage=$(mktemp -d)
# Written beside the target and renamed at the end: never a half-written OUT.
tmp="$out.partial.$$"
trap 'rm -rf "$stage" "$tmp"' EXIT
mkdir -p "$stage/bin" "$stage/lib"
cp "$(readlink -f "$(command -v node)")" "$stage/bin/node"

# Browser and UMD bundles of tfjs: Node loads each package's dist/*.node.js (its "main").
ex=()
for f in tfjs/dist/tf.js tfjs-core/dist/tf-core.js tfjs-layers/dist/tf-layers.js tfjs-converter/dist/tf-converter.js \
  tfjs-backend-webgl/dist/tf-backend-webgl.js tfjs-backend-cpu/dist/tf-backend-cpu.js tfjs-data/dist/tf-data.js \
  tfjs-backend-webgpu/dist/tf-backend-webgpu.js tfjs-backend-wasm/dist/tf-backend-wasm.js; do
  ex+=(--exclude="node_modules/@tensorflow/$f")
done
platform="$(node -p 'process.platform + "-" + process.arch')"
tar --exclude='node_modules/typescript' --exclude='node_modules/@types' --exclude='*.map' --exclude='*.min.js' \
  --exclude='*.es2017.js' --exclude='*.fesm.js' --exclude='*/miniprogram' --exclude='*.html' "${ex[@]}" \
  $(for d in node_modules/webgpu/dist/*/; do [[ "$(basename "$d")" == "$platform" ]] || echo "--exclude=${d%/}"; done) \
  -cf "$stage/checkout.tar" node_modules $( [[ -d native/build ]] && echo native/build )

if [[ -f native/build/openblas-kernels.node ]]; then
  # The addon's own libraries (not libc and the loader, which the other machine has).
  ldd native/build/openblas-kernels.node | awk '/=> \// {print $3}' | grep -E 'openblas|gfortran|quadmath' |
    while read -r lib; do cp -L "$lib" "$stage/lib/$(basename "$lib")"; done
fi
if [[ -n "$shared" ]]; then
  mkdir -p "$stage/data"
  for d in golden models text zeroshot README.md; do [[ -e "$shared/$d" ]] && cp -r "$shared/$d" "$stage/data/"; done
fi

cat > "$stage/install.sh" <<'EOS'
#!/usr/bin/env bash
# Put the bundle's node_modules and native/build into the checkout named (default: here).
set -euo pipefail
tar -xf "$(dirname "$0")/checkout.tar" -C "${1:-.}"
EOS
cat > "$stage/env.sh" <<'EOS'
# Source it: the bundle's Node first on PATH, its libraries for the addon, its shared data.
here=$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)
export PATH="$here/bin:$PATH" LD_LIBRARY_PATH="$here/lib${LD_LIBRARY_PATH:+:$LD_LIBRARY_PATH}"
[[ -d "$here/data" ]] && export PRUNELAB_SHARED_DATA="$here/data"
EOS
chmod +x "$stage/install.sh"
tar -C "$stage" -cf - . | xz -T0 -6 > "$tmp"
mv "$tmp" "$out"
echo "offline-bundle: wrote $out ($(du -h "$out" | cut -f1))" >&2
