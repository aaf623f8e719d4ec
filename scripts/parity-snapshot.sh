#!/usr/bin/env bash
# A snapshot of what every pruning method produces on stories260K, for checking that a speed change
# left the results alone: 14 configurations pruned with the CLI (default options, TinyStories sample
# as calibration), each printed as "name sha256-prefix-of-model.safetensors perplexity" (TinyStories
# sample, seqlen 256). Run it before and after a change and diff the two outputs: any moved weight
# changes the hash. Not a test (the values are the code's own), a developer's before/after check.
#   scripts/parity-snapshot.sh OUTDIR > snapshot.txt     # ≈ 1.5 min on 2 cores; needs ../shared
set -uo pipefail
cd "$(dirname "$0")/.."
out=${1:?usage: scripts/parity-snapshot.sh OUTDIR}
mkdir -p "$out"
M=../shared/data/models/stories260K/stories260K.bin
C=../shared/data/text/tinystories-sample.txt
[[ -f $M && -f $C ]] || { echo "parity-snapshot: needs ../shared/data (stories260K and the TinyStories sample)" >&2; exit 2; }
run() {
  local name=$1; shift
  rm -rf "${out:?}/$name"
  if ! npx prunelab prune --model "$M" --calib "$C" --out "$out/$name" --json "$@" > "$out/$name.prune.json" 2> "$out/$name.err"; then
    echo "$name FAILED (see $out/$name.err)"; return
  fi
  local h p
  h=$(sha256sum "$out/$name/model.safetensors" | cut -c1-16)
  p=$(npx prunelab eval ppl --model "$out/$name" --text "$C" --seqlen 256 --json 2>> "$out/$name.err" |
    node -e 'let s="";process.stdin.on("data",d=>s+=d).on("end",()=>console.log(JSON.parse(s).ppl))')
  echo "$name $h $p"
}
run magnitude --method magnitude
run wanda --method wanda
run wanda24 --method wanda --pattern 2:4
run sparsegpt --method sparsegpt
run sparsegpt24 --method sparsegpt --pattern 2:4
run dsnot --method dsnot
run fista --method fistapruner
run fista24 --method fistapruner --pattern 2:4
run magsp --method magnitude-sp --sparsity 0.2
run wandasp --method wanda-sp --sparsity 0.2
run flap --method flap --sparsity 0.2
run llmpruner --method llm-pruner --sparsity 0.2
run cfsp --method cfsp --sparsity 0.2
run saap --method saap --sparsity 0.1
