#!/usr/bin/env bash
# GPU time per kernel of several builds of this checkout's CUDA kernels, each with its own extra nvcc
# flags (a tuning knob of docs/ops.md, or the ablation switches of the branch named there), in one run:
#
#   bash segmentation/ops/profile_variants.sh OUT_DIR REPS NAME=FLAGS [NAME=FLAGS ...]
#
# FLAGS: nvcc flags separated by commas ("base=" for none), e.g. grid3=-DMSDA_TILE_GRID_PER_SM=3.
# Builds every variant in parallel (architectures: $TORCH_CUDA_ARCH_LIST, default 9.0), then runs
# profile_kernels.py (bf16, batch 1, fwd+bwd; injector and extractor) for the variants in turn, REPS
# times. Writes OUT_DIR/profiles.txt (per variant, shape and repetition: microseconds per kernel and
# the span) and OUT_DIR/build_NAME.log.
set -uo pipefail
repo=$(cd "$(dirname "$0")/../.." && pwd)
out=$1
reps=$2
shift 2
mkdir -p "$out"
tmp=$(mktemp -d)
export TORCH_CUDA_ARCH_LIST=${TORCH_CUDA_ARCH_LIST:-9.0} PYTHONUNBUFFERED=1 MS_DEFORM_ATTN_JIT=0
mkdir -p "$tmp/src"
ln -s "$repo/segmentation/ops" "$tmp/src/ms_deform_attn"
names=()
declare -A flags  # variant -> nvcc flags (also needed at run time: the library's stamp includes them)
for spec in "$@"; do
  name=${spec%%=*}
  names+=("$name")
  flags[$name]=${spec#*=}
  flags[$name]=${flags[$name]//,/ }
  PYTHONPATH="$tmp/src" MS_DEFORM_ATTN_BUILD_DIR="$tmp/build_$name" MS_DEFORM_ATTN_NVCC_FLAGS="${flags[$name]}" \
    python -c "import sys; from ms_deform_attn import build; sys.exit(build.main(['cuda']))" > "$out/build_$name.log" 2>&1 &
done
wait
for rep in $(seq 1 "$reps"); do
  for name in "${names[@]}"; do
    for shape in injector extractor; do
      line=$(PYTHONPATH="$tmp/src" MS_DEFORM_ATTN_BUILD_DIR="$tmp/build_$name" MS_DEFORM_ATTN_NVCC_FLAGS="${flags[$name]}" \
        python -m ms_deform_attn.profile_kernels --shape $shape 2>"$tmp/stderr" |
        awk -F'|' '/_kernel|span/ {gsub(/ /, "", $2); gsub(/ /, "", $4); printf "%s %s; ", $2, $4}')
      echo "$name $shape $rep: ${line:-failed: $(tail -3 "$tmp/stderr" | tr '\n' ' ')}"
    done
  done
done | tee "$out/profiles.txt"
