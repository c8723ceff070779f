#!/usr/bin/env bash
# Issue 15: GPU telemetry recorded once on a real GPU without vLLM (benchmarks/gpu_busy_engine.py):
# a run over examples/pdfs with NVML sampled every second; summary, report and the ledger's
# gpu_samples rows into $OUT/telemetry. Needs ocrfleet importable (PYTHONPATH=/tmp/site on the lent hosts).
set -u
export PYTHONPATH=/tmp/site:$PWD
rm -rf /tmp/run
python3 -m ocrfleet run examples/pdfs -o /tmp/run --engine benchmarks.gpu_busy_engine:create --gpus 0 --vllm-arg busy_seconds=2 --gpu-sample-seconds 1 --no-progress > $OUT/telemetry-stdout.txt 2> $OUT/telemetry-stderr.txt; echo rc=$?
mkdir -p $OUT/telemetry
cp /tmp/run/run-summary.json /tmp/run/report.html $OUT/telemetry/ 
cp /tmp/run/logs/run.log $OUT/telemetry/ 2>/dev/null
python3 - <<'PY'
import sqlite3, json, os, glob
db = [p for p in glob.glob('/tmp/run/*.sqlite*') if p.endswith('.sqlite')][0]
con = sqlite3.connect(db)
cur = con.execute('select * from gpu_samples order by t')
cols = [d[0] for d in cur.description]
rows = [dict(zip(cols, r)) for r in cur]
json.dump(rows, open(os.environ['OUT'] + '/telemetry/gpu_samples.json', 'w'), indent=1)
print(len(rows), 'samples', rows[:2])
PY
nvidia-smi --query-gpu=name,driver_version,memory.total --format=csv > $OUT/telemetry/gpu.txt
tail -5 $OUT/telemetry-stderr.txt
