#!/usr/bin/env bash
# All GPU measurements in one run, for a session lent a device machine (15 minutes in all).
#
# Prepare here (the device machine has no network and a run carries at most 64 MiB):
#   mkdir -p .device && cp -r ../shared/data/gz2-kaggle-5k-141px .device/
#   echo /.device/ >> .git/info/exclude
# Then run it with the device tool: command `bash benchmarks/gpu_session.sh`, carry [".device"].
# Results land in $OUT (the tool's return folder) as JSON and logs.
#
# The machine has its own PyTorch; gzmorph runs from the source tree (no pip install).
set -u
export PYTHONPATH="$PWD/src${PYTHONPATH:+:$PYTHONPATH}"
DATA=${DATA:-.device/gz2-kaggle-5k-141px}
OUT=${OUT:-/tmp/gzmorph-gpu}
mkdir -p "$OUT"
step() { echo "== $*" | tee -a "$OUT/session.log"; timeout "${LIMIT:-240}" "$@" >>"$OUT/session.log" 2>&1; echo "   rc=$?" >>"$OUT/session.log"; }

python -c "import torch; print(torch.__version__, torch.cuda.get_device_name())" | tee "$OUT/device.txt"
step python -m pytest -q -p no:cacheprovider -k cuda tests/nn tests/inference/test_precision.py
step python benchmarks/model_speed.py --device cuda --presets small p4m cyclic paper --batch-size 512 --json "$OUT/model_eager.json"
step python benchmarks/model_speed.py --device cuda --presets paper --batch-size 1024 --compile --json "$OUT/model_compiled.json"
step python benchmarks/predict_speed.py --device cuda --preset paper --images "$DATA/images_training_rev1" \
    --batch-size 512 --n 5000 --n-tta 500 --tta none paper --json "$OUT/predict.json"
# Accuracy: the fast recipe for 2M examples (the reference point is 0.0891 after 2M), then the
# paper recipe for as long as the budget allows.
LIMIT=300 step python benchmarks/accuracy_5k.py --preset fast --examples 2000000 --eval-every 250000 \
    --device cuda --data "$DATA" --out /tmp/gzmorph-acc  # checkpoints stay off $OUT (size limits)
cp /tmp/gzmorph-acc/*/benchmark.json "$OUT/accuracy_fast.json" 2>/dev/null
cp /tmp/gzmorph-acc/*/metrics.jsonl "$OUT/accuracy_fast_metrics.jsonl" 2>/dev/null
# The symmetry-built p4m preset (0.0874 after 59 min on 2 CPU cores): its 1.1M-example schedule on the GPU.
LIMIT=240 step python benchmarks/learning_curve.py --preset p4m --device cuda --data "$DATA" --points 1 2 4 \
    --out /tmp/gzmorph-curves
cp /tmp/gzmorph-curves/*/curve.jsonl "$OUT/curve_p4m_cuda.jsonl" 2>/dev/null
# Issue 20: the paper preset trains in fp32 by default; its bf16 speed path (--precision fast)
# needs its accuracy effect measured: the same short paper-recipe curve in both precisions.
for prec in fp32 fast; do
  LIMIT=120 step python benchmarks/learning_curve.py --preset paper --device cuda --data "$DATA" --points 1 2 \
      --precision $prec --out /tmp/gzmorph-paper-$prec
  cp /tmp/gzmorph-paper-$prec/*/curve.jsonl "$OUT/curve_paper_$prec.jsonl" 2>/dev/null
done
tail -n 40 "$OUT/session.log"
