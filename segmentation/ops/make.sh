#!/usr/bin/env bash
# Build the compiled ms_deform_attn kernels in place: segmentation/ops/build/{cpu,cuda}/ (or
# $MS_DEFORM_ATTN_BUILD_DIR). The package loads them from there; see docs/ops.md.
#
#   bash segmentation/ops/make.sh            # cpu, plus cuda when nvcc is on the PATH
#   bash segmentation/ops/make.sh cuda       # one flavour
#
# Needs torch, a C++ compiler and ninja (pip install ninja); for cuda, nvcc matching torch's CUDA.
# GPU architectures: $TORCH_CUDA_ARCH_LIST, default 7.5 8.0 8.6 8.9 9.0+PTX (CUDA 13 dropped 7.0;
# with CUDA 12, 7.0 is added). Python: $PYTHON, default python.
set -euo pipefail
cd "$(dirname "$0")"
flavours=("$@")
if [ ${#flavours[@]} -eq 0 ]; then
  flavours=(cpu)
  if command -v nvcc >/dev/null; then flavours+=(cuda); fi
fi
if [ -z "${TORCH_CUDA_ARCH_LIST:-}" ] && command -v nvcc >/dev/null; then
  major=$(nvcc --version | sed -n 's/.*release \([0-9]*\)\..*/\1/p')
  TORCH_CUDA_ARCH_LIST="7.5;8.0;8.6;8.9;9.0+PTX"
  if [ "${major:-13}" -lt 13 ]; then TORCH_CUDA_ARCH_LIST="7.0;${TORCH_CUDA_ARCH_LIST}"; fi
  export TORCH_CUDA_ARCH_LIST
fi
exec "${PYTHON:-python}" build.py "${flavours[@]}"
