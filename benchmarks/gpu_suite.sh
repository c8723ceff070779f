#!/usr/bin/env bash
# The GPU benchmark suite, in phases that each fit one device call (≤ 10 min), run from the
# repository root on a host with vLLM importable (the lent machines: the gpu-kit in /tmp/site).
#
#   bash benchmarks/gpu_suite.sh setup            # carried wheels, synthetic full checkpoint
#   bash benchmarks/gpu_suite.sh warm             # one engine start of each kind (caches)
#   bash benchmarks/gpu_suite.sh phase1           # recipe vs ocrfleet, 512 and 1024 tokens
#   bash benchmarks/gpu_suite.sh phase2           # KV bf16/fp8, fp8 weights, 2 engines/GPU …
#   bash benchmarks/gpu_suite.sh phase3           # recipe settings in ocrfleet, resolution modes
#   bash benchmarks/gpu_suite.sh scaling          # 1, 2, 4 GPUs (GPU_COUNTS), one after another
#   bash benchmarks/gpu_suite.sh handover         # 2 GPUs: ocrfleet before/after shared buffers
#   bash benchmarks/gpu_suite.sh engines2         # 2 GPUs: recipe, ocrfleet with 2 engines/GPU
#   bash benchmarks/gpu_suite.sh engines-recipe   # 1 GPU: the recipe alone, then …
#   bash benchmarks/gpu_suite.sh engines-ocrfleet # … ocrfleet with its defaults alone
#   TOKENS=512 bash benchmarks/gpu_suite.sh same-call  # 1 GPU: recipe alone, then ocrfleet's defaults alone
#                                                      # (then each SWEEP variant, as in sweep)
#   SWEEP="--engines-per-gpu 3|…" bash benchmarks/gpu_suite.sh sweep  # recipe, defaults, variants
#   bash benchmarks/gpu_suite.sh mps              # 1 GPU: the defaults (+ SWEEP) under the suite's MPS daemon
#   bash benchmarks/gpu_suite.sh graphs-off       # 1 GPU: ocrfleet's defaults without encoder CUDA graphs
#   bash benchmarks/gpu_suite.sh modes            # 1 GPU: ocrfleet's defaults in tiny/small/base/large
#   PROFILE_SECONDS=15 …                          # py-spy each engine core once every slot has pages
#   DRY_RUN=1 bash benchmarks/gpu_suite.sh phase1 # print the jobs only
#
# Jobs of a phase run at once, each on its own GPU(s) (CUDA_VISIBLE_DEVICES), each with its own
# vLLM compile cache. Results: $OUT/<phase>.json (every job's JSON) and $OUT/<phase>-logs.txt.
set -euo pipefail

phase="${1:?usage: gpu_suite.sh setup|warm|phase1|phase2|phase3|scaling|handover|engines2|engines-recipe|engines-ocrfleet}"
OUT="${OUT:-/tmp/ocrfleet-bench-out}"
WORK="${WORK:-/tmp/ocrfleet-bench}"
PDF="${PDF:-.bench/pages-1024.pdf}"
MODEL="${MODEL:-$WORK/ckpt-full}"
PAGES="${PAGES:-512}"
RENDER="${RENDER_WORKERS:-12}"
JOB_TIMEOUT="${JOB_TIMEOUT:-540}"
# OMP_NUM_THREADS for every job when THREADS is set; unset (the default), each job gets what a
# user's run gets (ocrfleet's GPU engines: 1 thread, engine_environment; the recipe: torch's own).
THREADS="${THREADS:-}"
export PYTHONPATH="${SITE:-/tmp/site}${PYTHONPATH:+:$PYTHONPATH}"
export VLLM_NO_USAGE_STATS=1 HF_HUB_OFFLINE=1 PYTHONUNBUFFERED=1
# Greedy decoding needs no FlashInfer sampler; without flashinfer-cubin vLLM would JIT-compile
# it with nvcc at each first start, and four engines doing that at once did not start within
# 9 minutes on an H200×4 (2026-11-27). Set for the recipe too, so both run the same kernels.
export VLLM_USE_FLASHINFER_SAMPLER=0
# With vLLM's default start method (fork) every engine core hung before loading the model on
# that host (5 engines, 2026-11-27); with spawn they started in 110-146 s. ocrfleet's engine
# sets the same default; set here for the recipe too.
export VLLM_WORKER_MULTIPROC_METHOD=spawn
mkdir -p "$OUT" "$WORK/parts" "$WORK/logs"

pids=()
names=()
JOB_ENV=()  # VAR=value words a SWEEP variant starts with

job() {  # job NAME GPUS CACHE command...
  local name="$1" gpus="$2" cache="$3"
  shift 3
  if [[ -n "${DRY_RUN:-}" ]]; then
    echo "[$name] CUDA_VISIBLE_DEVICES=$gpus VLLM_CACHE_ROOT=$WORK/vcache/$cache ${JOB_ENV[*]} $*"
    return
  fi
  # Start from the warm phase's compile cache (torch.compile artefacts): starts in seconds.
  if [[ -d "$WORK/vcache/warm" && ! -d "$WORK/vcache/$cache" ]]; then
    cp -r "$WORK/vcache/warm" "$WORK/vcache/$cache"
  fi
  mkdir -p "$WORK/vcache/$cache"
  local -a envs=(CUDA_VISIBLE_DEVICES="$gpus" VLLM_CACHE_ROOT="$WORK/vcache/$cache" "${JOB_ENV[@]}")
  [[ -n "$THREADS" ]] && envs+=(OMP_NUM_THREADS="$THREADS")
  env "${envs[@]}" timeout "$JOB_TIMEOUT" "$@" >"$WORK/logs/$name.log" 2>&1 &
  pids+=("$!")
  names+=("$name")
}

bench() {  # bench NAME GPUS CACHE recipe|ocrfleet TOKENS [extra args]
  local name="$1" gpus="$2" cache="$3" variant="$4" tokens="$5"
  shift 5
  job "$name" "$gpus" "$cache" python3 benchmarks/gpu_bench.py "$variant" --pdf "$PDF" \
    --model "$MODEL" --pages "${JOB_PAGES:-$PAGES}" --tokens "$tokens" --label "$name" \
    --json "$WORK/parts/$name.json" "$@"
}

profile_when_busy() {  # NAME: py-spy (raw stacks) every engine core in the steady state
  [[ -n "${PROFILE_SECONDS:-}" && -z "${DRY_RUN:-}" ]] || return 0
  local name="$1" since
  since=$(date +%s)
  (
    # Steady state: every slot of the newest run has sent pages to its engine. Neither GPU use
    # (it fired during compilation) nor pages done (with --ignore-eos a slot's pages all finish
    # together, at its end) marked it (2026-12-02).
    python3 - "$WORK" "$since" <<'PY'
import sqlite3, sys, time
from pathlib import Path
work, since = Path(sys.argv[1]), float(sys.argv[2])
query = """SELECT (SELECT CAST(value AS INTEGER) FROM meta WHERE key = 'fleet_slots'),
                  (SELECT count(DISTINCT worker) FROM attempts)"""
for _ in range(240):  # not forever: a slot that never sends leaves the call time to finish
    ledgers = [p for p in work.glob("ocrfleet-*/run/ocrfleet.sqlite") if p.stat().st_mtime >= since]
    try:
        slots, sending = max((tuple(v or 0 for v in sqlite3.connect(p, timeout=1)
                              .execute(query).fetchone()) for p in ledgers), default=(0, 0))
    except sqlite3.Error:
        slots, sending = 0, 0
    if slots and sending >= slots:
        break
    time.sleep(1)
PY
    sleep 3
    mkdir -p "$WORK/profile-$name"
    for pid in $(pgrep -f 'VLLM::EngineCore'); do
      "${SITE:-/tmp/site}/bin/py-spy" record --nonblocking -d "$PROFILE_SECONDS" -r 100 -f raw \
        -o "$WORK/profile-$name/$pid.txt" --pid "$pid" >"$WORK/profile-$name/$pid.log" 2>&1 &
    done
    wait
    # One file: the device machine returns at most 8 files a call (2026-12-03: five engines'
    # profiles and logs crowded out the phase's JSON).
    tar -czf "$OUT/profile-$name.tgz" -C "$WORK" "profile-$name"
  ) &
}

finish() {  # wait for every job; gather results and log tails into $OUT
  [[ -n "${DRY_RUN:-}" ]] && return
  local i status=0
  for i in "${!pids[@]}"; do
    if ! wait "${pids[$i]}"; then
      echo "job ${names[$i]} failed" >&2
      status=1
    fi
  done
  python3 - "$WORK/parts" "$OUT/$phase.json" "$phase" <<'PY'
import json, sys
from pathlib import Path
parts, out, phase = Path(sys.argv[1]), Path(sys.argv[2]), sys.argv[3]
found = {p.stem: json.loads(p.read_text()) for p in sorted(parts.glob("*.json"))
         if not p.stem.startswith("done-")}
if out.exists():  # a phase that runs its jobs one after another finishes several times
    found = {**json.loads(out.read_text())["results"], **found}
for p in parts.glob("*.json"):
    p.rename(parts / f"done-{phase}-{p.name}")  # the next phase collects only its own
out.write_text(json.dumps({"phase": phase, "results": found}, indent=2))
for name, payload in found.items():
    r = payload["result"]
    print(f"{name:32s} {r.get('pages_per_second')} pages/s  busy {r.get('gpu_busy')}  "
          f"prompt {r.get('prompt_tokens_per_page')}  start {r.get('engine_start_seconds')}")
PY
  for i in "${!names[@]}"; do
    echo "===== ${names[$i]} ====="
    grep -v "it/s\]" "$WORK/logs/${names[$i]}.log" | tail -n 60
  done >>"$OUT/$phase-logs.txt"
  nvidia-smi --query-gpu=index,name,memory.used,utilization.gpu --format=csv >>"$OUT/$phase-logs.txt" || true
  pids=()
  names=()
  return "$status"
}

run_variants() {  # PREFIX TOKENS: each SWEEP variant (ocrfleet run arguments, "|" between;
  # leading VAR=value words go to the job's environment, e.g. "OMP_NUM_THREADS=4")
  local prefix="$1" t="$2" i
  local -a variants args
  IFS='|' read -r -a variants <<<"${SWEEP:-}"
  for i in "${!variants[@]}"; do
    read -r -a args <<<"${variants[$i]}"
    JOB_ENV=()
    while ((${#args[@]})) && [[ "${args[0]}" =~ ^[A-Z_][A-Z0-9_]*= ]]; do
      JOB_ENV+=("${args[0]}")
      args=("${args[@]:1}")
    done
    JOB_PAGES="${OCRFLEET_PAGES:-1024}" bench "$prefix-$i" 0 ocrfleet-a ocrfleet "$t" \
      --kv-cache-dtype fp8 -- "${args[@]}"
    JOB_ENV=()
    finish || return 1
  done
}

case "$phase" in
  setup)
    python3 -m pip install -q --no-index --no-deps --no-compile --no-cache-dir --upgrade \
      --target "${SITE:-/tmp/site}" .whl/*.whl
    python3 -m ocrfleet make-checkpoint "$MODEL" --size full
    python3 - <<'PY'
import torch, vllm, pypdfium2, importlib.metadata as md
import ocrfleet.vllm_plugin.model, ocrfleet.vllm_plugin.ngram  # import against this vLLM
eps = [e.value for e in md.entry_points(group="vllm.general_plugins")]
print("vllm", vllm.__version__, "torch", torch.__version__, "gpus", torch.cuda.device_count(),
      torch.cuda.get_device_name(0), "plugins", eps)
PY
    nvidia-smi
    ;;
  warm)
    # One engine start of each kind, one after the other, so compile caches fill once
    # instead of four engines compiling the same graphs at the same time.
    JOB_PAGES=8 bench warm-recipe 0 warm recipe 16
    finish || true
    JOB_PAGES=8 bench warm-ocrfleet 0 warm ocrfleet 16 --kv-cache-dtype fp8 -- --render-workers "$RENDER"
    finish
    ;;
  phase1)
    bench recipe-512 0 recipe-a recipe 512
    bench ocrfleet-512 1 ocrfleet-a ocrfleet 512 --kv-cache-dtype fp8 -- --render-workers "$RENDER"
    bench recipe-1024 2 recipe-b recipe 1024
    bench ocrfleet-1024 3 ocrfleet-b ocrfleet 1024 --kv-cache-dtype fp8 -- --render-workers "$RENDER"
    finish
    ;;
  phase2)
    for c in c d e f; do cp -r "$WORK/vcache/ocrfleet-a/." "$WORK/vcache/ocrfleet-$c/" 2>/dev/null || true; done
    bench ocrfleet-512-bf16kv 0 ocrfleet-c ocrfleet 512 --kv-cache-dtype auto -- --render-workers "$RENDER"
    bench ocrfleet-512-fp8w 1 ocrfleet-d ocrfleet 512 --kv-cache-dtype fp8 --quantization fp8 -- --render-workers "$RENDER"
    bench ocrfleet-512-2engines 2 ocrfleet-e ocrfleet 512 --kv-cache-dtype fp8 -- --engines-per-gpu 2 --render-workers "$RENDER"
    bench ocrfleet-1024-2engines 3 ocrfleet-f ocrfleet 1024 --kv-cache-dtype fp8 -- --engines-per-gpu 2 --render-workers "$RENDER"
    finish
    ;;
  phase3)
    for c in g h i j; do cp -r "$WORK/vcache/ocrfleet-a/." "$WORK/vcache/ocrfleet-$c/" 2>/dev/null || true; done
    bench ocrfleet-512-recipe-settings 0 ocrfleet-g ocrfleet 512 --kv-cache-dtype auto -- --preprocess vllm --ngram per-request --render-workers "$RENDER"
    job modes-a 1 ocrfleet-h bash -c "for m in tiny small; do python3 benchmarks/gpu_bench.py ocrfleet --pdf $PDF --model $MODEL --pages 256 --tokens 512 --label mode-\$m --json $WORK/parts/mode-\$m.json --kv-cache-dtype fp8 -- --resolution \$m --render-workers $RENDER || exit 1; done"
    JOB_PAGES=256 bench mode-base 2 ocrfleet-i ocrfleet 512 --kv-cache-dtype fp8 -- --resolution base --render-workers "$RENDER"
    JOB_PAGES=256 bench mode-large 3 ocrfleet-j ocrfleet 512 --kv-cache-dtype fp8 -- --resolution large --render-workers "$RENDER"
    finish
    ;;
  handover)
    # The same pages through ocrfleet before shared page buffers (a /dev/shm file per page,
    # pdfium's fill; the wheel in .whl/old/) and after, at once on two GPUs of one host.
    [[ -n "${DRY_RUN:-}" ]] || python3 -m pip install -q --no-index --no-deps --no-compile \
      --no-cache-dir --upgrade --target "$WORK/site-old" .whl/old/ocrfleet-*.whl
    job ocrfleet-512-before 0 ocrfleet-k env PYTHONPATH="$WORK/site-old:$PYTHONPATH" \
      python3 benchmarks/gpu_bench.py ocrfleet --pdf "$PDF" --model "$MODEL" --pages "$PAGES" \
      --tokens 512 --label ocrfleet-512-before --json "$WORK/parts/ocrfleet-512-before.json" \
      --kv-cache-dtype fp8 -- --render-workers "$RENDER"
    bench ocrfleet-512-after 1 ocrfleet-l ocrfleet 512 --kv-cache-dtype fp8 -- --render-workers "$RENDER"
    finish
    ;;
  engines2)
    # vLLM's recipe and ocrfleet with two engines on one GPU, at once on two GPUs.
    bench recipe-512 0 recipe-a recipe 512
    bench ocrfleet-512-2engines 1 ocrfleet-e ocrfleet 512 --kv-cache-dtype fp8 -- --engines-per-gpu 2 --render-workers "$RENDER"
    finish
    ;;
  engines-recipe | engines-ocrfleet)
    # One GPU, one job at a time (each alone on the host; two device calls, same host): the
    # recipe, then ocrfleet with its defaults (--engines-per-gpu auto, render processes from
    # the cores). ocrfleet gets OCRFLEET_PAGES pages: its engines start one after another, so
    # the last one needs pages left when it is ready.
    if [[ "$phase" == engines-recipe ]]; then
      bench recipe-512 0 recipe-a recipe 512
    else
      JOB_PAGES="${OCRFLEET_PAGES:-$PAGES}" bench ocrfleet-512-defaults 0 ocrfleet-a ocrfleet 512 --kv-cache-dtype fp8
    fi
    finish
    ;;
  same-call)
    # Issue 12's protocol: one GPU, one device call, each job alone on the host: the recipe,
    # then ocrfleet with its defaults, TOKENS output tokens a page.
    t="${TOKENS:-512}"
    bench "recipe-$t" 0 recipe-a recipe "$t"
    finish || exit 1
    JOB_PAGES="${OCRFLEET_PAGES:-1024}" bench "ocrfleet-$t-defaults" 0 ocrfleet-a ocrfleet "$t" --kv-cache-dtype fp8
    profile_when_busy "ocrfleet-$t-defaults"
    finish || exit 1
    wait
    # SWEEP variants after the defaults, in the same call: e.g. SWEEP="--engines-per-gpu 4".
    run_variants "ocrfleet-$t-variant" "$t"
    ;;
  sweep)
    # The recipe, then ocrfleet's defaults, then each variant in SWEEP (ocrfleet run arguments,
    # variants separated by "|"), one job at a time, TOKENS output tokens a page: which
    # setting moves a GPU-bound run (e.g. SWEEP="--engines-per-gpu 3|--max-num-seqs 512").
    t="${TOKENS:-512}"
    bench "recipe-$t" 0 recipe-a recipe "$t"
    finish || exit 1
    JOB_PAGES="${OCRFLEET_PAGES:-1024}" bench "ocrfleet-$t-defaults" 0 ocrfleet-a ocrfleet "$t" --kv-cache-dtype fp8
    finish || exit 1
    run_variants "ocrfleet-$t-sweep" "$t" || exit 1
    ;;
  mps)
    # ocrfleet's defaults with the engines' kernels under a private CUDA MPS daemon (its own
    # pipe and log folders: no system daemon, no compute-mode change; it quits at the end).
    # Without MPS the engines sharing a GPU take turns on it (time slices); with it their
    # kernels can run side by side. ocrfleet's defaults now start such a daemon themselves
    # (--mps auto); with this one in the environment they use it instead. For runs without
    # MPS, give a variant --mps off.
    export CUDA_MPS_PIPE_DIRECTORY="$WORK/mps/pipe" CUDA_MPS_LOG_DIRECTORY="$WORK/mps/log"
    mkdir -p "$CUDA_MPS_PIPE_DIRECTORY" "$CUDA_MPS_LOG_DIRECTORY"
    if [[ -z "${DRY_RUN:-}" ]]; then
      CUDA_VISIBLE_DEVICES=0 nvidia-cuda-mps-control -d
      trap 'echo quit | nvidia-cuda-mps-control || true' EXIT
    fi
    t="${TOKENS:-512}"
    if [[ -z "${MPS_SKIP_DEFAULTS:-}" ]]; then
      JOB_PAGES="${OCRFLEET_PAGES:-1024}" bench "ocrfleet-$t-defaults-mps" 0 ocrfleet-a ocrfleet "$t" --kv-cache-dtype fp8
      finish || status=$?
    fi
    # SWEEP variants under the same daemon, as in the sweep phase.
    run_variants "ocrfleet-$t-mps-sweep" "$t" || status=$?
    [[ -z "${DRY_RUN:-}" ]] && tail -n 20 "$CUDA_MPS_LOG_DIRECTORY/control.log" >>"$OUT/$phase-logs.txt" 2>/dev/null
    exit "${status:-0}"
    ;;
  graphs-off)
    # ocrfleet's defaults with vLLM's default compilation settings: no encoder CUDA graphs.
    JOB_PAGES="${OCRFLEET_PAGES:-1024}" bench ocrfleet-512-no-encoder-graphs 0 ocrfleet-a ocrfleet 512 \
      --kv-cache-dtype fp8 -- --vllm-arg 'compilation_config={}'
    profile_when_busy ocrfleet-512-no-encoder-graphs
    finish
    wait
    ;;
  modes)
    # The resolution modes with ocrfleet's defaults, one after another (Gundam: same-call).
    for m in ${MODES:-tiny small base large}; do
      JOB_PAGES="${MODE_PAGES:-256}" bench "mode-$m" 0 ocrfleet-a ocrfleet 512 --kv-cache-dtype fp8 -- --resolution "$m"
      finish || exit 1
    done
    ;;
  scaling)
    # One job at a time, so no other engine shares the host's CPUs (phase3 of 2026-11-27 ran
    # 1 and 2 GPUs beside other jobs and measured 0.615). Each GPU gets PAGES pages.
    for n in ${GPU_COUNTS:-1 2 4}; do
      gpus=$(seq -s, 0 $((n - 1)))
      [[ -d "$WORK/vcache/scaling" ]] || cp -r "$WORK/vcache/ocrfleet-a" "$WORK/vcache/scaling" 2>/dev/null || true
      JOB_PAGES=$((n * PAGES)) bench "ocrfleet-${n}gpu" "$gpus" scaling ocrfleet 512 --kv-cache-dtype fp8 -- --render-workers "$RENDER"
      finish || exit 1
    done
    ;;
  *)
    echo "unknown phase: $phase" >&2
    exit 2
    ;;
esac
