#!/usr/bin/env bash
# Build, test and benchmark ms_deform_attn on a CUDA machine that has torch but not this project's
# other dependencies (mmseg, mmengine): the package is imported through a symlink.
#
#   bash segmentation/ops/run_gpu_checks.sh [OUT_DIR]      # default ./gpu_results
#
# Writes env.txt, build.txt, gpu_tests.txt (pytest of tests/test_ops_{cuda,cpu}.py), benchmark.md
# (python -m ms_deform_attn.benchmark, the full table), profile.txt (kernel time breakdown of one
# fwd+bwd), variants.md (the kernels' compile-time knobs, timed on a subset) and ncu.txt (Nsight Compute: speed of light, occupancy, warp stalls of the kernels).
# Architectures: $TORCH_CUDA_ARCH_LIST, default 9.0 (the H200 these figures come from).
set -uo pipefail
repo=$(cd "$(dirname "$0")/../.." && pwd)
out=${1:-$PWD/gpu_results}
mkdir -p "$out"
pkgs=$(mktemp -d)
ln -s "$repo/segmentation/ops" "$pkgs/ms_deform_attn"
export PYTHONPATH="$pkgs${PYTHONPATH:+:$PYTHONPATH}" PYTHONUNBUFFERED=1
export TORCH_CUDA_ARCH_LIST=${TORCH_CUDA_ARCH_LIST:-9.0}
build="$repo/segmentation/ops/build.py"
variants=("-DMSDA_BATCH=2" "-DMSDA_MIN_BLOCKS=6 -DMSDA_BATCH=2" "-DMSDA_MIN_BLOCKS=1")

{ nvidia-smi; python -c "import torch; print('torch', torch.__version__, 'cuda', torch.version.cuda)"
  nvcc --version | tail -2; nproc; } > "$out/env.txt" 2>&1
start=$(date +%s)
python "$build" cuda > "$out/build.txt" 2>&1 & main_build=$!
python "$build" cpu > "$pkgs/build_cpu.log" 2>&1 &
for i in "${!variants[@]}"; do
  MS_DEFORM_ATTN_BUILD_DIR="$pkgs/variant$i" MS_DEFORM_ATTN_NVCC_FLAGS="${variants[$i]}" \
    python "$build" cuda > "$pkgs/variant$i.log" 2>&1 &
done
if ! wait $main_build; then cat "$out/build.txt"; exit 1; fi
echo "cuda build: $(( $(date +%s) - start )) s" >> "$out/build.txt"

cd "$repo"
python -m pytest -q -p no:cacheprovider tests/test_ops_cuda.py tests/test_ops_cpu.py 2>&1 | tee "$out/gpu_tests.txt"
wait  # the CPU and variant builds
tail -2 "$pkgs/build_cpu.log" >> "$out/build.txt"
python -m ms_deform_attn.benchmark --out "$out/benchmark.md" > "$out/benchmark_log.txt" 2>&1
tail -n +1 "$out/benchmark.md"

python - > "$out/profile.txt" 2>&1 <<'PY'
import torch
from torch.profiler import ProfilerActivity, profile
from ms_deform_attn.benchmark import make_inputs, make_step, model_shapes
for shape in model_shapes(1):
    for dtype in (torch.bfloat16, torch.float32):
        step = make_step("native", "fwd+bwd", make_inputs(shape, 1, dtype, "cuda", 0))
        for _ in range(3):
            step()
        torch.cuda.synchronize()
        with profile(activities=[ProfilerActivity.CUDA]) as prof:
            for _ in range(10):
                step()
            torch.cuda.synchronize()
        print(f"== {shape.name} {dtype} fwd+bwd, 10 calls")
        print(prof.key_averages().table(sort_by="cuda_time_total", row_limit=12))
PY

subset=(--backends native --dtypes bf16 fp32 --batches 1 --modes fwd fwd+bwd)
{ for i in "${!variants[@]}"; do
    echo "## variant ${variants[$i]}"
    tail -3 "$pkgs/variant$i.log"
    MS_DEFORM_ATTN_BUILD_DIR="$pkgs/variant$i" MS_DEFORM_ATTN_NVCC_FLAGS="${variants[$i]}" \
      python -m ms_deform_attn.benchmark "${subset[@]}" 2>&1 | tail -10
  done; } > "$out/variants.md" 2>&1
cat > "$pkgs/ncu_step.py" <<'PY'
import torch
from ms_deform_attn.benchmark import make_inputs, make_step, model_shapes
step = make_step("native", "fwd+bwd", make_inputs(model_shapes(1)[0], 1, torch.bfloat16, "cuda", 0))
for _ in range(2):
    step()
torch.cuda.synchronize()
PY
ncu=$(command -v ncu || ls /opt/nvidia/nsight-compute/*/ncu 2>/dev/null | head -1)
timeout 150 "${ncu:-ncu}" --clock-control none -k regex:'forward_kernel|backward_kernel|value_grad|count_keys|fill_buckets' \
  -s 5 -c 5 --section SpeedOfLight --section Occupancy --section WarpStateStats --section MemoryWorkloadAnalysis \
  python "$pkgs/ncu_step.py" > "$out/ncu.txt" 2>&1
echo "total: $(( $(date +%s) - start )) s" >> "$out/build.txt"
