#!/usr/bin/env bash
# Distributed inference (predictions written to files) with torchrun.
#   bash segmentation/dist_infer.sh CONFIG CHECKPOINT GPUS [infer.py options]
# Multi-node: set NNODES, NODE_RANK, MASTER_ADDR, PORT in the environment on every node.
set -euo pipefail
if [ $# -lt 3 ]; then echo "usage: $0 CONFIG CHECKPOINT GPUS [options]" >&2; exit 2; fi
CONFIG=$1
CHECKPOINT=$2
GPUS=$3
shift 3
HERE=$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)
exec "${PYTHON:-python}" -m torch.distributed.run \
    --nnodes="${NNODES:-1}" --node_rank="${NODE_RANK:-0}" \
    --master_addr="${MASTER_ADDR:-127.0.0.1}" --master_port="${PORT:-29520}" \
    --nproc_per_node="$GPUS" \
    "$HERE/tools/infer.py" "$CONFIG" "$CHECKPOINT" --launcher pytorch "$@"
