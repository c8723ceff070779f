#!/usr/bin/env bash
# Issue 15: GPU telemetry recorded once on a real GPU without vLLM (benchmarks/gpu_busy_engine.py):
# a run over examples/pdfs with NVML sampled every second; summary, report and the ledger's
# gpu_samples rows into $OUT/telemetry. Needs ocrfleet importable (PYTHONPATH=/tmp/site on the
# lent hosts, after `gpu_suite.sh setup`).
set -u
OUT="${OUT:-/tmp/ocrfleet-telemetry-out}"
RUN="${RUN:-/tmp/ocrfleet-telemetry-run}"
export PYTHONPATH="${SITE:-/tmp/site}:$PWD"
rm -rf "$RUN"
mkdir -p "$OUT/telemetry"
python3 -m ocrfleet run examples/pdfs -o "$RUN" --engine benchmarks.gpu_busy_engine:create \
  --gpus 0 --vllm-arg busy_seconds=2 --gpu-sample-seconds 1 --no-progress \
  >"$OUT/telemetry-stdout.txt" 2>"$OUT/telemetry-stderr.txt"
echo "rc=$?"
cp "$RUN/run-summary.json" "$RUN/report.html" "$RUN/logs/run.log" "$OUT/telemetry/"
RUN="$RUN" OUT="$OUT" python3 - <<'PY'
import json, os, sqlite3
from pathlib import Path
db = Path(os.environ["RUN"]) / "ocrfleet.sqlite"
con = sqlite3.connect(db)
cur = con.execute("SELECT * FROM gpu_samples ORDER BY t")
cols = [d[0] for d in cur.description]
rows = [dict(zip(cols, r)) for r in cur]
out = Path(os.environ["OUT"]) / "telemetry" / "gpu_samples.json"
out.write_text(json.dumps(rows, indent=1))
print(len(rows), "samples", rows[:2])
PY
nvidia-smi --query-gpu=name,driver_version,memory.total --format=csv >"$OUT/telemetry/gpu.txt"
tail -5 "$OUT/telemetry-stderr.txt"
