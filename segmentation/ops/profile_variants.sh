#!/usr/bin/env bash
# GPU time per kernel of several builds of the CUDA kernels, each with its own extra nvcc flags (a
# tuning knob of docs/ops.md, or the ablation switches of the branch named there) and optionally its
# own source tree (another version's segmentation/ops), in one run:
#
#   bash segmentation/ops/profile_variants.sh OUT_DIR REPS NAME[@OPS_DIR]=FLAGS [...]
#
# FLAGS: nvcc flags separated by commas ("base=" for none), e.g. grid3=-DMSDA_TILE_GRID_PER_SM=3;
# OPS_DIR: a segmentation/ops folder to build instead of this checkout's, e.g. v18@/tmp/v18/ops=.
# Builds every variant in parallel (architectures: $TORCH_CUDA_ARCH_LIST, default 9.0), then runs
# the variant's own profile_kernels.py (batch 1, fwd+bwd; injector and extractor; dtypes $DTYPES,
# default bf16) for the variants in turn, REPS times. Writes OUT_DIR/profiles.txt (per variant,
# dtype, shape and repetition: microseconds per kernel and the span) and OUT_DIR/build_NAME.log.
# With TESTS set (pytest arguments, e.g. TESTS="tests/test_ops_cuda.py"), first runs those tests
# against each variant's build (OUT_DIR/tests_NAME.txt; the summary line is printed); TESTS_REST
# replaces them for every variant after the first (e.g. a -k filter).
set -uo pipefail
repo=$(cd "$(dirname "$0")/../.." && pwd)
out=$1
reps=$2
shift 2
mkdir -p "$out"
tmp=$(mktemp -d)
export TORCH_CUDA_ARCH_LIST=${TORCH_CUDA_ARCH_LIST:-9.0} PYTHONUNBUFFERED=1 MS_DEFORM_ATTN_JIT=0
names=()
declare -A flags  # variant -> nvcc flags (also needed at run time: the library's stamp includes them)
for spec in "$@"; do
  head=${spec%%=*}
  name=${head%%@*}
  ops="$repo/segmentation/ops"
  [ "$head" != "$name" ] && ops=$(cd "${head#*@}" && pwd)
  names+=("$name")
  flags[$name]=${spec#*=}
  flags[$name]=${flags[$name]//,/ }
  mkdir -p "$tmp/src_$name"
  ln -s "$ops" "$tmp/src_$name/ms_deform_attn"
  PYTHONPATH="$tmp/src_$name" MS_DEFORM_ATTN_BUILD_DIR="$tmp/build_$name" MS_DEFORM_ATTN_NVCC_FLAGS="${flags[$name]}" \
    python -c "import sys; from ms_deform_attn import build; sys.exit(build.main(['cuda']))" > "$out/build_$name.log" 2>&1 &
done
wait
first=1
for name in "${names[@]}"; do
  [ -z "${TESTS:-}" ] && break
  args=${TESTS}
  [ $first -eq 0 ] && args=${TESTS_REST:-$TESTS}
  first=0
  # shellcheck disable=SC2086  # pytest arguments split on purpose
  PYTHONPATH="$tmp/src_$name${PYTHONPATH:+:$PYTHONPATH}" MS_DEFORM_ATTN_BUILD_DIR="$tmp/build_$name" \
    MS_DEFORM_ATTN_NVCC_FLAGS="${flags[$name]}" python -m pytest -q -p no:cacheprovider $args > "$out/tests_$name.txt" 2>&1
  echo "tests $name (exit $?): $(tail -1 "$out/tests_$name.txt")"
done
for rep in $(seq 1 "$reps"); do
  for dtype in ${DTYPES:-bf16}; do
    for name in "${names[@]}"; do
      for shape in injector extractor; do
        line=$(PYTHONPATH="$tmp/src_$name" MS_DEFORM_ATTN_BUILD_DIR="$tmp/build_$name" \
          MS_DEFORM_ATTN_NVCC_FLAGS="${flags[$name]}" \
          python -m ms_deform_attn.profile_kernels --shape $shape --dtype $dtype 2>"$tmp/stderr" |
          awk -F'|' '/_kernel|span/ {gsub(/ /, "", $2); gsub(/ /, "", $4); printf "%s %s; ", $2, $4}')
        echo "$name $dtype $shape $rep: ${line:-failed: $(tail -3 "$tmp/stderr" | tr '\n' ' ')}"
      done
    done
  done
done | tee "$out/profiles.txt"
