#!/usr/bin/env bash
# Build native/openblas-kernels.c (OpenBLAS matrix products for the wasm backend, see
# src/backend/openblas.ts), native/fista-kernels.c (FISTAPruner's host pass),
# native/row-masks.c (exact per-row mask selection) and native/elementwise-kernels.c (the wasm
# backend's elementwise and row kernels, see src/backend/native-elementwise.ts) into native/build/openblas-kernels.node. Run by `npm install` / `npm ci`
# and by `npm run build-native`. Optional: where the C compiler, Node's headers or OpenBLAS are
# missing it says what to install and exits 0, and PruneLab runs on the wasm backend's own products.
# Plain cc rather than node-gyp: four C files, one library, nothing to configure. The elementwise
# file is built at -O3 (its loops vectorised, once per AVX width). Every file is built with
# -ffp-contract=off (no fused multiply-adds: every width does the same IEEE operations),
# -fno-math-errno and -fno-trapping-math (sqrtf without its errno branch, selects as blends: the
# values are the same). Without -fno-trapping-math GCC leaves FISTAPruner's accepted step
# (fista-kernels.c) scalar: 13.8 ns an entry on an AMD EPYC (Zen 3), 2.1 with it.
set -uo pipefail
cd "$(dirname "$0")/.."

say() { echo "build-native: $*" >&2; }
out=native/build/openblas-kernels.node
cc=${CC:-cc}
node_include="$(dirname "$(dirname "$(command -v node)")")/include/node"
[[ -f "$node_include/node_api.h" ]] || node_include=/usr/include/node
cblas_dir=""
for d in /usr/include/x86_64-linux-gnu /usr/include/aarch64-linux-gnu /usr/include/openblas /usr/include; do
  [[ -f "$d/cblas.h" ]] && { cblas_dir=$d; break; }
done

if ! command -v "$cc" >/dev/null 2>&1; then say "no C compiler ($cc): skipped; products stay on the wasm backend's XNNPACK"; exit 0; fi
if [[ ! -f "$node_include/node_api.h" ]]; then say "Node's headers (node_api.h) not found: skipped"; exit 0; fi
if [[ -z "$cblas_dir" ]] || ! "$cc" -print-file-name=libopenblas.so | grep -q /; then
  say "OpenBLAS not found: skipped (install it with 'apt-get install libopenblas-dev', then 'npm run build-native')"
  exit 0
fi
mkdir -p native/build
tmp="$out.tmp.$$"
# -ffp-contract=off: the host kernels repeat TypeScript's float64 operations exactly (no fused multiply-adds).
if "$cc" -O3 -ffp-contract=off -fno-math-errno -fno-trapping-math -c -fPIC -Wall -Werror -I"$node_include" \
    native/elementwise-kernels.c -o "$tmp.o" &&
  "$cc" -O2 -ffp-contract=off -fno-math-errno -fno-trapping-math -shared -fPIC -Wall -Werror -DNODE_GYP_MODULE_NAME=openblas_kernels -I"$node_include" -I"$cblas_dir" \
    native/openblas-kernels.c native/fista-kernels.c native/row-masks.c "$tmp.o" -lopenblas -lm -o "$tmp"; then
  rm -f "$tmp.o"
  mv "$tmp" "$out"
  say "built $out"
else
  rm -f "$tmp" "$tmp.o"
  say "compiling native/*.c failed: skipped; products stay on the wasm backend's XNNPACK"
fi
exit 0
