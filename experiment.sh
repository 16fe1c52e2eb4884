#!/bin/sh
# The paper's training recipe on 4 GPUs: train.py's defaults, its one source (R101-Token on GLDv2-clean, global
# batch 128, 512 x 512 crops, 30 epochs, SGD lr 0.01 with linear decay to 0; tests/test_train.py holds them to the
# paper). Run it again after a stop: it resumes from $OUTPUT_DIR/last.pth. Extra arguments go to train.py, e.g.
# `sh experiment.sh --amp bf16`.
#
# Environment (defaults in brackets):
#   NPROC        GPUs (processes) on this node [4]
#   NNODES       nodes [1];  NODE_RANK  this node's rank, 0 .. NNODES-1 [0]
#   MASTER_ADDR  address of node 0 [127.0.0.1];  MASTER_PORT  a free port on node 0 [29500]
#   DATA_ROOT    data root holding Google-landmark-v2/ (or that folder itself), as test.py's [data]
#   OUTPUT_DIR   checkpoints, metrics.csv, training_curves.png [runs/r101-token]
#   TORCHRUN     the launcher [torchrun]
# With NNODES=2, run it on both nodes with the same MASTER_ADDR/MASTER_PORT and NODE_RANK=0 and 1: the global
# batch stays 128, split over NNODES x NPROC processes.
set -eu

NPROC=${NPROC:-4}
NNODES=${NNODES:-1}
NODE_RANK=${NODE_RANK:-0}
MASTER_ADDR=${MASTER_ADDR:-127.0.0.1}
MASTER_PORT=${MASTER_PORT:-29500}
DATA_ROOT=${DATA_ROOT:-data}
OUTPUT_DIR=${OUTPUT_DIR:-runs/r101-token}
TORCHRUN=${TORCHRUN:-torchrun}

exec $TORCHRUN --nnodes "$NNODES" --node_rank "$NODE_RANK" --nproc_per_node "$NPROC" \
    --master_addr "$MASTER_ADDR" --master_port "$MASTER_PORT" \
    "$(dirname "$0")/train.py" --data-root "$DATA_ROOT" --output-dir "$OUTPUT_DIR" --resume auto "$@"
