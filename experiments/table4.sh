#!/bin/sh
# Table 4 of the paper (the refinement block's parts): one row, trained with the paper's recipe on 4 GPUs
# (experiment.sh: R101 on GLDv2-clean, global batch 128, 512 px crops, 30 epochs, SGD) plus the row's model flags:
#   full                Token: two refinement blocks with cross- and self-attention  (no flag)
#   one-block           one refinement block                                         --refinement-blocks 1
#   no-cross-attention  refinement blocks without cross-attention                    --no-cross-attention
#   no-self-attention   refinement blocks without self-attention                     --no-self-attention
# The rows are experiments/tables.py's (tests/test_experiments.py holds the two equal).
#
# Usage: sh experiments/table4.sh ROW [train.py flags]. OUTPUT_DIR defaults to runs/table4/ROW; experiment.sh's
# other variables (NPROC, DATA_ROOT, ...) apply. Evaluate a row with
#   python test.py --checkpoint runs/table4/ROW/last.pth --datasets roxford5k rparis6k
set -eu
ROWS="full one-block no-cross-attention no-self-attention"
case "${1:-}" in
    full) FLAGS="" ;;
    one-block) FLAGS="--refinement-blocks 1" ;;
    no-cross-attention) FLAGS="--no-cross-attention" ;;
    no-self-attention) FLAGS="--no-self-attention" ;;
    *) echo "error: Table 4 has the rows: $ROWS (got '${1:-}'); usage: sh $0 ROW [train.py flags]" >&2; exit 2 ;;
esac
export OUTPUT_DIR="${OUTPUT_DIR:-runs/table4/$1}"
shift
exec sh "$(dirname "$0")/../experiment.sh" $FLAGS "$@"
