#!/usr/bin/env bash
# The GPU checks of a session with a lent GPU, as one call that fits the device's 10-minute command limit:
#   1. throughput of the HF Trainer and the cell's variants, per SIMS shape (issue 7)     <= 2 x 170 s
#   2. the numerics run (200 steps against the Trainer), fastest document-masked variant   <= 110 s
#   3. a 3B member sharded over one GPU: measured peak memory against the estimate (issue 9)  <= 100 s
# Each part has its own timeout, so a slow one leaves the others' figures. Everything lands in $OUT
# (the device tool's folder that comes back), or bench/results/session/ when run by hand.
#
#   bash bench/gpu_session.sh                       # on the device: run(command="bash bench/gpu_session.sh", timeout_s=590)
#   VARIANTS=doc,mb16 bash bench/gpu_session.sh     # other variants (see python3 bench/gpu_throughput.py -h)
set -u
cd "$(dirname "$0")/.."
OUT=${OUT:-bench/results/session}
mkdir -p "$OUT"
PY=${PY:-python3}
VARIANTS=${VARIANTS:-doc,mb16,mb16_bf16w,mb16_autotune,mb16_bf16w_autotune}
if ! $PY -c 'import sys, torch; sys.exit(not torch.cuda.is_available())' 2>/dev/null; then
    echo '{"bench": "gpu_session", "skipped": "no CUDA GPU on this machine"}'
    exit 0
fi
nvidia-smi --query-gpu=name,memory.total,driver_version --format=csv,noheader | tee "$OUT/device.txt"
$PY -c 'import torch, transformers; print("torch", torch.__version__, "transformers", transformers.__version__)' \
    | tee -a "$OUT/device.txt"

for shape in qwen2.5-0.5B llama3.2-1B; do   # a shape each, so a slow autotune cannot starve the other
    timeout 170 $PY bench/gpu_throughput.py --shapes $shape --variants "$VARIANTS" --numerics-steps 0 \
        --out "$OUT/gpu_throughput_$shape.json" 2>&1 | tee "$OUT/gpu_throughput_$shape.log"
done

# the fastest variant with document masks on the first shape (the Trainer gets the same masks)
BEST=$($PY - "$OUT/gpu_throughput_qwen2.5-0.5B.json" <<'EOF'
import json, sys
try:
    row = json.load(open(sys.argv[1]))["shapes"][0]
except (OSError, ValueError, IndexError, KeyError):
    print("doc"); raise SystemExit
ours = {k[5:]: v["tokens_per_second"] for k, v in row.items() if k.startswith("ours_")}
ours = {k: v for k, v in ours.items() if "causal" not in k.split("_") and "profile" not in k.split("_")}
print(max(ours, key=ours.get) if ours else "doc")
EOF
)
echo "numerics for variant: $BEST"
timeout 110 $PY bench/gpu_throughput.py --shapes "" --numerics-steps 200 --numerics-variant "$BEST" \
    --out "$OUT/gpu_numerics.json" 2>&1 | tee "$OUT/gpu_numerics.log"

timeout 100 $PY bench/sharded_memory.py --no-compile 2>&1 | tee "$OUT/sharded_memory.log"
echo "session done; results in $OUT"
