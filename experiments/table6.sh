#!/bin/sh
# Table 6 of the paper (the number of visual tokens L): one row, trained with the paper's recipe on 4 GPUs
# (experiment.sh: R101 on GLDv2-clean, global batch 128, 512 px crops, 30 epochs, SGD) plus the row's model flag:
#   L1  --num-tokens 1;  L2  --num-tokens 2;  full  Token, L = 4 (no flag);  L8  --num-tokens 8;  L16  --num-tokens 16
# The rows are experiments/tables.py's (tests/test_experiments.py holds the two equal).
#
# Usage: sh experiments/table6.sh ROW [train.py flags]. OUTPUT_DIR defaults to runs/table6/ROW; experiment.sh's
# other variables (NPROC, DATA_ROOT, ...) apply. Evaluate a row with
#   python test.py --checkpoint runs/table6/ROW/last.pth --datasets roxford5k rparis6k
set -eu
ROWS="L1 L2 full L8 L16"
case "${1:-}" in
    L1) FLAGS="--num-tokens 1" ;;
    L2) FLAGS="--num-tokens 2" ;;
    full) FLAGS="" ;;
    L8) FLAGS="--num-tokens 8" ;;
    L16) FLAGS="--num-tokens 16" ;;
    *) echo "error: Table 6 has the rows: $ROWS (got '${1:-}'); usage: sh $0 ROW [train.py flags]" >&2; exit 2 ;;
esac
export OUTPUT_DIR="${OUTPUT_DIR:-runs/table6/$1}"
shift
exec sh "$(dirname "$0")/../experiment.sh" $FLAGS "$@"
