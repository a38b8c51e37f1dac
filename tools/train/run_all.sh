#!/bin/sh
# The exact recipe behind models/demo (about 75 minutes on 2 busy CPU cores): MLM pretraining,
# the five fine-tunings initialised from it, a continued MLM run for the fill-mask model, exports.
# Every step is niced and limited to 2 threads; logs go to tools/train/runs/<name>.log.
# --stop-after replays the step at which our runs were cut by their --max-minutes wall-time cap
# (the LR schedule still spans the full --epochs), so a re-run does the same number of updates.
set -e
cd "$(dirname "$0")/../.."
PY="nice -n 19 /usr/bin/python3 tools/train/train.py"
mkdir -p tools/train/runs
L=tools/train/runs
[ "$SKIP_MLM" = 1 ] || $PY mlm --max-steps 400 > $L/mlm.log 2>&1
$PY finetune --task sst2 --epochs 2 --lr 1e-4 --stop-after 3883 --max-minutes 30 > $L/sst2.log 2>&1
$PY finetune --task conll03 --conll-valid --epochs 10 --lr 5e-4 --schedule cosine --run-name conll03c \
  --stop-after 3661 --max-minutes 30 > $L/conll03c.log 2>&1
$PY finetune --task mrpc --epochs 5 --lr 1e-4 > $L/mrpc.log 2>&1
$PY finetune --task codah --epochs 5 --lr 5e-5 > $L/codah.log 2>&1
$PY finetune --task squad --epochs 2 --lr 2e-4 --max-minutes 30 > $L/squad.log 2>&1
# continued pretraining for bert-edge-mlm only (the fine-tunings above start from runs/mlm)
$PY mlm --init-from $L/mlm/model.pt --run-name mlm2 --seed 43 --max-steps 330 --lr 5e-4 --warmup-ratio 0.03 \
  --max-minutes 30 > $L/mlm2.log 2>&1
$PY export --task mlm --run-name mlm2
$PY export --task conll03 --run-name conll03c
for t in sst2 mrpc codah squad; do $PY export --task $t; done
