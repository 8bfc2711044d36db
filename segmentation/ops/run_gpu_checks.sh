#!/usr/bin/env bash
# Build, test and benchmark ms_deform_attn on a CUDA machine that has torch but not this project's
# other dependencies (mmseg, mmengine): the package is imported through a symlink.
#
#   bash segmentation/ops/run_gpu_checks.sh [OUT_DIR]      # default ./gpu_results
#
# Writes to OUT_DIR: env.txt (GPU, versions, build logs, also of make.sh's default architecture
# list), gpu_tests.txt (pytest of tests/test_ops_{cuda,cpu}.py), sanitizer.txt (compute-sanitizer
# memcheck of the odd-shape CUDA tests), benchmark.md (python -m ms_deform_attn.benchmark, the full table), benchmark_cpu.md (the
# CPU kernels against the reference), profile.txt (GPU time per kernel of one fwd+bwd, profile_kernels.py;
# also per injector level),
# variants.md (the kernels' compile-time knobs, timed on a subset) and ncu.txt (Nsight Compute:
# speed of light, occupancy, memory of one fwd+bwd's kernels).
# Architectures: $TORCH_CUDA_ARCH_LIST, default 9.0 (the H200 these figures come from).
set -uo pipefail
repo=$(cd "$(dirname "$0")/../.." && pwd)
out=${1:-$PWD/gpu_results}
mkdir -p "$out"
tmp=$(mktemp -d)
ln -s "$repo/segmentation/ops" "$tmp/ms_deform_attn"
export PYTHONPATH="$tmp${PYTHONPATH:+:$PYTHONPATH}" PYTHONUNBUFFERED=1
export TORCH_CUDA_ARCH_LIST=${TORCH_CUDA_ARCH_LIST:-9.0}
build="$repo/segmentation/ops/build.py"
variants=("-DMSDA_FWD_PDL=1" "-DMSDA_FWD_PDL=0" "-DMSDA_FWD_REGION_HEADS=0 -DMSDA_FWD_REGION_HEADS_FP32=0"
          "-DMSDA_FWD_REGION_HEADS=0 -DMSDA_FWD_REGION_HEADS_FP32=0 -DMSDA_FWD_MEMORY_ORDER=0"
          "-DMSDA_FWD_FILL_BY_ENTRY=0" "-DMSDA_FWD_TILE_LOOP=0" "-DMSDA_FWD_BALANCE=0" "-DMSDA_FWD_STREAMING=0")
ncu=$(command -v ncu || ls /opt/nvidia/nsight-compute/*/ncu 2>/dev/null | head -1)
sanitizer=$(command -v compute-sanitizer || ls /usr/local/cuda/bin/compute-sanitizer 2>/dev/null | head -1)

{ nvidia-smi; python -c "import torch; print('torch', torch.__version__, 'cuda', torch.version.cuda)"
  nvcc --version | tail -2; echo "cores: $(nproc)"; } > "$out/env.txt" 2>&1
start=$(date +%s)
python "$build" cuda > "$tmp/build_cuda.log" 2>&1 & main_build=$!
python "$build" cpu > "$tmp/build_cpu.log" 2>&1 &
for i in "${!variants[@]}"; do
  MS_DEFORM_ATTN_BUILD_DIR="$tmp/variant$i" MS_DEFORM_ATTN_NVCC_FLAGS="${variants[$i]}" \
    python "$build" cuda > "$tmp/variant$i.log" 2>&1 &
done
# make.sh's default architecture list must compile too (each kernel for every listed GPU generation)
MS_DEFORM_ATTN_BUILD_DIR="$tmp/all_archs" TORCH_CUDA_ARCH_LIST="7.5;8.0;8.6;8.9;9.0+PTX" \
  python "$build" cuda > "$tmp/all_archs.log" 2>&1 &
wait $main_build; status=$?
{ echo "== build (cuda: $(( $(date +%s) - start )) s)"; cat "$tmp/build_cuda.log"; } >> "$out/env.txt"
if [ $status -ne 0 ]; then exit 1; fi

cd "$repo"
python -m pytest -q -p no:cacheprovider tests/test_ops_cuda.py tests/test_ops_cpu.py 2>&1 | tee "$out/gpu_tests.txt"
wait  # the CPU, variant and all-architecture builds
tail -2 "$tmp/build_cpu.log" >> "$out/env.txt"
{ echo "== build for 7.5;8.0;8.6;8.9;9.0+PTX (make.sh's default)"; tail -2 "$tmp/all_archs.log"; } >> "$out/env.txt"
timeout 200 "${sanitizer:-compute-sanitizer}" --tool memcheck --error-exitcode 9 python -m pytest -q -p no:cacheprovider \
  tests/test_ops_cuda.py -k "L2P3D12 or L1P5D24 or L3P4D32 or L1P4D32 or misaligned or batch_limit or wide_maps or crowded or balanced or streaming" \
  > "$out/sanitizer.txt" 2>&1
echo "exit code $?" >> "$out/sanitizer.txt"
python -m ms_deform_attn.benchmark --out "$out/benchmark.md" > "$tmp/benchmark_log.txt" 2>&1
cat "$out/benchmark.md"
python -m ms_deform_attn.benchmark --device cpu --scale 2 --dtypes fp32 --batches 1 --reps 5 \
  --out "$out/benchmark_cpu.md" > /dev/null 2>&1

{ for shape in injector extractor; do for dtype in bf16 fp32; do
    python -m ms_deform_attn.profile_kernels --shape $shape --dtype $dtype --timeline; echo; done; done
  for level in 0 1 2 -1; do python -m ms_deform_attn.profile_kernels --shape injector --only-level $level; echo; done
} 2>/dev/null > "$out/profile.txt"

subset=(--backends native --dtypes bf16 fp32 --batches 1 2 --modes fwd fwd+bwd fwd+proj)
{ for i in "${!variants[@]}"; do
    echo "## variant ${variants[$i]}"
    tail -1 "$tmp/variant$i.log"
    MS_DEFORM_ATTN_BUILD_DIR="$tmp/variant$i" MS_DEFORM_ATTN_NVCC_FLAGS="${variants[$i]}" \
      python -m ms_deform_attn.benchmark "${subset[@]}" 2>&1 | grep "^|"
  done; } > "$out/variants.md" 2>&1

cat > "$tmp/ncu_step.py" <<'PY'
import torch
from ms_deform_attn.benchmark import make_inputs, make_step, model_shapes
step = make_step("native", "fwd+bwd", make_inputs(model_shapes(1)[0], 1, torch.bfloat16, "cuda", 0))
for _ in range(2):
    step()
torch.cuda.synchronize()
PY
timeout 100 "${ncu:-ncu}" --clock-control none -k regex:'forward_kernel|tile_' \
  -s 4 -c 4 --section SpeedOfLight --section Occupancy --section MemoryWorkloadAnalysis \
  python "$tmp/ncu_step.py" > "$out/ncu.txt" 2>&1
echo "total: $(( $(date +%s) - start )) s" >> "$out/env.txt"
