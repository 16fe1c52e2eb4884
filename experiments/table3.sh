#!/bin/sh
# Table 3 of the paper (its components): one row, trained with the paper's recipe on 4 GPUs (experiment.sh: R101
# on GLDv2-clean, global batch 128, 512 px crops, 30 epochs, SGD) plus the row's model flags:
#   spoc       SPoC pooling of the local features, no LFSA  --aggregation spoc --lfsa-blocks 0
#   tokenizer  + the tokenizer                             --lfsa-blocks 0 --refinement-blocks 0
#   lfsa       + LFSA                                       --refinement-blocks 0
#   full       + two refinement blocks: Token               (no flag)
#   gem        GeM pooling in place of the tokens (ours)    --aggregation gem
# The rows are experiments/tables.py's (tests/test_experiments.py holds the two equal).
#
# Usage: sh experiments/table3.sh ROW [train.py flags]. OUTPUT_DIR defaults to runs/table3/ROW; experiment.sh's
# other variables (NPROC, DATA_ROOT, ...) apply. Evaluate a row with
#   python test.py --checkpoint runs/table3/ROW/last.pth --datasets roxford5k rparis6k
set -eu
ROWS="spoc tokenizer lfsa full gem"
case "${1:-}" in
    spoc) FLAGS="--aggregation spoc --lfsa-blocks 0" ;;
    tokenizer) FLAGS="--lfsa-blocks 0 --refinement-blocks 0" ;;
    lfsa) FLAGS="--refinement-blocks 0" ;;
    full) FLAGS="" ;;
    gem) FLAGS="--aggregation gem" ;;
    *) echo "error: Table 3 has the rows: $ROWS (got '${1:-}'); usage: sh $0 ROW [train.py flags]" >&2; exit 2 ;;
esac
export OUTPUT_DIR="${OUTPUT_DIR:-runs/table3/$1}"
shift
exec sh "$(dirname "$0")/../experiment.sh" $FLAGS "$@"
