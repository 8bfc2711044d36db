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
# PROFILE=1: also OUT_DIR/profiles.txt, GPU time per kernel of one batch-1 fwd+bwd (profile_kernels.py) of
# both versions; NCU=1: also OUT_DIR/ncu.txt, Nsight Compute metrics (time, L1 hit rate, L1 / shared
# wavefronts and bank conflicts, L2 sectors, instructions and issue activity, registers) of the
# forward and the query-centric fp32 backward of both versions at both model shapes.
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
run() {  # version, command...: runs the command with that version's package and library
  local v=$1; shift
  PYTHONPATH="$tmp/$v${PYTHONPATH:+:$PYTHONPATH}" MS_DEFORM_ATTN_BUILD_DIR="$tmp/build_$v" MS_DEFORM_ATTN_JIT=0 "$@"
}
for rep in $(seq 1 "$reps"); do
  for v in old new; do
    run $v python -m ms_deform_attn.benchmark "${subset[@]}" --out "$out/${v}_$rep.md" > /dev/null 2>&1 ||
      echo "benchmark of $v failed (see $out/build_$v.log)"
  done
done
if [ "${PROFILE:-0}" = 1 ]; then
  cp "$repo/segmentation/ops/profile_kernels.py" "$tmp/old/ms_deform_attn/" 2>/dev/null
  for v in old new; do for args in "injector" "extractor" "injector --dtype fp32" "extractor --dtype fp32"; do
    echo "== $v $args"; run $v python -m ms_deform_attn.profile_kernels --shape $args 2>/dev/null
  done; done > "$out/profiles.txt"
fi
if [ "${NCU:-0}" = 1 ]; then
  ncu=$(command -v ncu || ls /opt/nvidia/nsight-compute/*/ncu /usr/local/cuda/bin/ncu 2>/dev/null | head -1)
  step="import sys, torch; from ms_deform_attn.benchmark import DTYPES, make_inputs, make_step, model_shapes
step = make_step('native', sys.argv[3], make_inputs(model_shapes(1)[int(sys.argv[1])], 1, DTYPES[sys.argv[2]], 'cuda', 0))
step(); step(); torch.cuda.synchronize()"
  metrics=gpu__time_duration.sum,l1tex__t_sector_hit_rate.pct,l1tex__data_pipe_lsu_wavefronts.sum,\
l1tex__data_pipe_lsu_wavefronts_mem_shared.sum,l1tex__data_bank_conflicts_pipe_lsu_mem_shared.sum,\
lts__t_sectors_srcunit_tex.sum,lts__throughput.avg.pct_of_peak_sustained_elapsed,\
l1tex__throughput.avg.pct_of_peak_sustained_elapsed,sm__inst_executed.sum,smsp__issue_active.avg.pct_of_peak_sustained_active,\
launch__registers_per_thread
  for v in old new; do
    for case in "0 bf16 fwd forward_kernel" "1 bf16 fwd forward_kernel" "0 fp32 fwd forward_kernel" \
                "1 fp32 fwd forward_kernel" "0 fp32 fwd+bwd backward_kernel" "1 fp32 fwd+bwd backward_kernel"; do
      set -- $case  # shape index (0 injector, 1 extractor), dtype, mode, kernel
      echo "== $v $case"
      run $v timeout 120 "${ncu:-ncu}" --clock-control none -k regex:"$4" -s 1 -c 1 --metrics $metrics --csv \
        python -c "$step" "$1" "$2" "$3" 2>/dev/null | grep '^"' | tail -n +2 | awk -F'","' '{print $(NF-2) " = " $NF}' | tr -d '"'
    done
  done > "$out/ncu.txt"
fi
echo "build dirs: $tmp/build_old $tmp/build_new"
