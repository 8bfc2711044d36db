#!/usr/bin/env bash
# Training on a Slurm cluster.
#   bash segmentation/slurm_train.sh PARTITION JOB_NAME CONFIG [train.py options]
# GPUS (default 8), GPUS_PER_NODE (default 8), CPUS_PER_TASK (default 5), SRUN_ARGS from the environment.
set -euo pipefail
if [ $# -lt 3 ]; then echo "usage: $0 PARTITION JOB_NAME CONFIG [options]" >&2; exit 2; fi
PARTITION=$1
JOB_NAME=$2
CONFIG=$3
shift 3
GPUS=${GPUS:-8}
HERE=$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)
srun -p "$PARTITION" --job-name="$JOB_NAME" --gres=gpu:"${GPUS_PER_NODE:-8}" \
    --ntasks="$GPUS" --ntasks-per-node="${GPUS_PER_NODE:-8}" \
    --cpus-per-task="${CPUS_PER_TASK:-5}" --kill-on-bad-exit=1 ${SRUN_ARGS:-} \
    "${PYTHON:-python}" -u "$HERE/tools/train.py" "$CONFIG" --launcher slurm "$@"
