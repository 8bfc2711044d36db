#!/usr/bin/env bash
# Distributed training with torchrun.
#   bash segmentation/dist_train.sh CONFIG GPUS [train.py options]
# GPUS = processes on this node (CPU processes with the gloo backend when CUDA is absent).
# Multi-node: set NNODES, NODE_RANK, MASTER_ADDR, PORT in the environment on every node.
set -euo pipefail
if [ $# -lt 2 ]; then echo "usage: $0 CONFIG GPUS [options]" >&2; exit 2; fi
CONFIG=$1
GPUS=$2
shift 2
HERE=$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)
exec "${PYTHON:-python}" -m torch.distributed.run \
    --nnodes="${NNODES:-1}" --node_rank="${NODE_RANK:-0}" \
    --master_addr="${MASTER_ADDR:-127.0.0.1}" --master_port="${PORT:-29500}" \
    --nproc_per_node="$GPUS" \
    "$HERE/tools/train.py" "$CONFIG" --launcher pytorch "$@"
