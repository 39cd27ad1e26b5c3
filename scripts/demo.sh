#!/usr/bin/env bash
# The main job end to end on the built-in toy dataset, on the CPU:
# prepare -> train -> eval -> predict -> visualize.  Run scripts/setup.sh first.
#   DEMO_DIR    where everything goes (default: demo)
#   DEMO_SET    extra `--set KEY=VALUE` overrides for training, e.g. "solver.max_iter=300"
set -euo pipefail
cd "$(dirname "$0")/.."
PDL=${PDL:-.venv/bin/pdl}
OUT=${DEMO_DIR:-demo}
SETS=()
for kv in ${DEMO_SET:-}; do SETS+=(--set "$kv"); done

"$PDL" prepare toy "$OUT/toy"
"$PDL" train --config configs/toy.yaml --data "$OUT/toy" --output "$OUT/run" "${SETS[@]}"
"$PDL" eval --data "$OUT/toy" --split val --weights "$OUT/run/model_final.pt" --json "$OUT/eval.json"
"$PDL" predict "$OUT/toy/leftImg8bit/val" --weights "$OUT/run/model_final.pt" --output "$OUT/predictions" --save-raw
"$PDL" visualize "$OUT/predictions" --images "$OUT/toy/leftImg8bit/val" --output "$OUT/visualize"
echo "demo: metrics in $OUT/eval.json, predictions in $OUT/predictions, pictures in $OUT/visualize"
