#!/bin/sh
# Table 5 of the paper (the tokenizer): one row, trained with the paper's recipe on 4 GPUs (experiment.sh: R101 on
# GLDv2-clean, global batch 128, 512 px crops, 30 epochs, SGD) plus the row's model flags:
#   full     Token: the attention tokenizer                        (no flag)
#   learned  centres learned by gradient, distance assignment      --tokenizer learned
#   vq       centres moved by a moving average, distance assignment  --tokenizer vq
# The rows are experiments/tables.py's (tests/test_experiments.py holds the two equal).
#
# Usage: sh experiments/table5.sh ROW [train.py flags]. OUTPUT_DIR defaults to runs/table5/ROW; experiment.sh's
# other variables (NPROC, DATA_ROOT, ...) apply. Evaluate a row with
#   python test.py --checkpoint runs/table5/ROW/last.pth --datasets roxford5k rparis6k
set -eu
ROWS="full learned vq"
case "${1:-}" in
    full) FLAGS="" ;;
    learned) FLAGS="--tokenizer learned" ;;
    vq) FLAGS="--tokenizer vq" ;;
    *) echo "error: Table 5 has the rows: $ROWS (got '${1:-}'); usage: sh $0 ROW [train.py flags]" >&2; exit 2 ;;
esac
export OUTPUT_DIR="${OUTPUT_DIR:-runs/table5/$1}"
shift
exec sh "$(dirname "$0")/../experiment.sh" $FLAGS "$@"
