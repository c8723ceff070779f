#!/usr/bin/env bash
# The deployment plan's launcher: one tmux session, one pane per shard, each pane one GPU.
#
#   deploy/tmux/run_shards.sh --input /data/pdfs --output /data/out --shards 4 [-- extra ocrfleet run options]
#   deploy/tmux/run_shards.sh ... --dry-run     # print the pane commands only
#
# On one node, `ocrfleet run IN -o OUT --gpus 0,1,2,3` (one supervisor, dynamic work sharing)
# is usually better: no GPU idles while another finishes a long PDF. Shards fit when the panes
# must be independent (restart one without the others) or when nodes split a corpus.
set -euo pipefail

input="" output="" shards=4 session="ocrfleet" dry_run=0 ocrfleet="${OCRFLEET:-ocrfleet}"
extra=()
usage() { sed -n '2,10p' "$0"; }
while (($#)); do
  case "$1" in
    --input) input="$2"; shift 2 ;;
    --output) output="$2"; shift 2 ;;
    --shards) shards="$2"; shift 2 ;;
    --session) session="$2"; shift 2 ;;
    --dry-run) dry_run=1; shift ;;
    -h|--help) usage; exit 0 ;;
    --) shift; extra=("$@"); break ;;
    *) echo "unknown option: $1" >&2; usage >&2; exit 2 ;;
  esac
done
[[ -n "$input" && -n "$output" ]] || { usage >&2; exit 2; }

commands=()
for ((i = 0; i < shards; i++)); do
  cmd=("$ocrfleet" run "$input" --output-dir "$output" --num-shards "$shards" --shard-index "$i" --gpus "$i" "${extra[@]}")
  commands+=("$(printf '%q ' "${cmd[@]}")")
done

if ((dry_run)); then
  printf '%s\n' "${commands[@]}"
  exit 0
fi

tmux new-session -d -s "$session" -n shards
for ((i = 0; i < shards; i++)); do
  ((i == 0)) || tmux split-window -t "$session:shards" -v
  tmux send-keys -t "$session:shards.$i" "${commands[$i]}" C-m
  tmux select-layout -t "$session:shards" tiled >/dev/null
done
echo "started tmux session '$session' with $shards panes; attach: tmux attach -t $session"
echo "progress of all shards: ocrfleet status $output"
