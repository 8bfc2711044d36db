#!/usr/bin/env bash
# Before / after timing of two versions of the ms_deform_attn CUDA kernels on one GPU, in one run:
# builds both (in parallel), then times them alternately, REPS times each, with the same benchmark
# subset (this checkout's benchmark.py for both, so both see identical inputs and timing).
#
#   bash segmentation/ops/compare_versions.sh OLD_OPS_DIR OUT_DIR [REPS] [-- benchmark arguments]
#
# OLD_OPS_DIR: a copy of segmentation/ops of the older version, e.g.
#   git archive <commit> segmentation/ops | tar -x -C /tmp/old   ->   /tmp/old/segmentation/ops
# Writes OUT_DIR/{old,new}_<rep>.md and OUT_DIR/build_{old,new}.log. The libraries are built into
# $CMP_BUILD_ROOT/build_{old,new} (default: a fresh temporary folder); an up-to-date one is reused.
# Default subset: --backends native --dtypes bf16 fp32 --batches 1 --modes fwd fwd+bwd.
set -uo pipefail
repo=$(cd "$(dirname "$0")/../.." && pwd)
old_src=$(cd "$1" && pwd)
out=$2
reps=${3:-2}
shift $(( $# >= 3 ? 3 : $# ))
[ "${1:-}" = "--" ] && shift
subset=("$@")
[ ${#subset[@]} -eq 0 ] && subset=(--backends native --dtypes bf16 fp32 --batches 1 --modes fwd fwd+bwd)
mkdir -p "$out"
tmp=${CMP_BUILD_ROOT:-$(mktemp -d)}
if [ ! -d "$tmp/old" ]; then
  mkdir -p "$tmp/new" "$tmp/old"
  ln -s "$repo/segmentation/ops" "$tmp/new/ms_deform_attn"
  cp -r "$old_src" "$tmp/old/ms_deform_attn"
  rm -rf "$tmp/old/ms_deform_attn/build"
  cp "$repo/segmentation/ops/benchmark.py" "$tmp/old/ms_deform_attn/benchmark.py"
fi
export TORCH_CUDA_ARCH_LIST=${TORCH_CUDA_ARCH_LIST:-9.0} PYTHONUNBUFFERED=1
for v in old new; do
  PYTHONPATH="$tmp/$v${PYTHONPATH:+:$PYTHONPATH}" MS_DEFORM_ATTN_BUILD_DIR="$tmp/build_$v" python -c \
    "import sys; from ms_deform_attn import build; sys.exit(0 if build.fresh_library('cuda') else build.main(['cuda']))" \
    > "$out/build_$v.log" 2>&1 &
done
wait
for rep in $(seq 1 "$reps"); do
  for v in old new; do
    PYTHONPATH="$tmp/$v${PYTHONPATH:+:$PYTHONPATH}" MS_DEFORM_ATTN_BUILD_DIR="$tmp/build_$v" MS_DEFORM_ATTN_JIT=0 \
      python -m ms_deform_attn.benchmark "${subset[@]}" --out "$out/${v}_$rep.md" > /dev/null 2>&1 ||
      echo "benchmark of $v failed (see $out/build_$v.log)"
  done
done
echo "build dirs: $tmp/build_old $tmp/build_new"
