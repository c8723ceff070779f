"""Summarise py-spy raw (collapsed) stacks of vLLM engine-core processes: where the one busy
CPU thread of each engine spends its samples, by stage of vLLM's engine step.

    python benchmarks/profile_summary.py profile-*.txt [--json OUT.json] [--top N]

Frames are matched by function name (the first matching stage, in the order below, wins).
`hottest_lines`: the innermost Python frames (file:line) with the most steady-state samples;
a line that calls into C (a torch op that waits for the GPU, a copy) collects that time.
"""

from __future__ import annotations

import argparse
import json
from collections import Counter
from pathlib import Path

STAGES = [
    ("engine start (not steady state)", ("_initialize_kv_caches", "EngineCore.__init__")),
    ("vision encoder (_execute_mm_encoder)", ("_execute_mm_encoder",)),
    ("multimodal batching (_reduce_data, group_mm_kwargs)", ("_reduce_data", "group_mm_kwargs")),
    ("n-gram logits processor", ("ngram", "NGram")),
    ("sampling", ("Sampler.", "sample (")),
    ("model forward (language model)", ("_model_forward", "CUDAGraphWrapper", "execute_model")),
    ("scheduler", ("Scheduler.schedule", "update_from_output")),
    ("input preparation", ("_prepare_inputs", "_update_states", "_gather_mm_embeddings")),
    (
        "output processing / IPC",
        ("process_output_sockets", "process_input_sockets", "serial_utils"),
    ),
]


def stage_of(stack: str) -> str:
    for name, needles in STAGES:
        if any(n in stack for n in needles):
            return name
    return "other"


def summarise(path: Path, top: int = 5) -> dict[str, object]:
    counts: Counter[str] = Counter()
    leaves: Counter[str] = Counter()
    for line in path.read_text("utf-8").splitlines():
        stack, _, n = line.rpartition(" ")
        if stack and n.isdigit():
            stage = stage_of(stack)
            counts[stage] += int(n)
            if stage != "engine start (not steady state)":
                leaves[stack.rsplit(";", 1)[-1]] += int(n)
    total = sum(counts.values())
    steady = total - counts["engine start (not steady state)"]
    return {
        "file": path.name,
        "samples": total,
        "steady_state_samples": steady,
        "share_of_steady_state": {
            k: round(v / steady, 3)
            for k, v in counts.most_common()
            if k != "engine start (not steady state)" and steady
        },
        "hottest_lines": {k: round(v / steady, 3) for k, v in leaves.most_common(top) if steady},
    }


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("files", nargs="+", type=Path)
    parser.add_argument("--json", type=Path)
    parser.add_argument("--top", type=int, default=5, help="hottest lines per file")
    args = parser.parse_args()
    result = [summarise(p, args.top) for p in args.files]
    text = json.dumps(result, indent=1)
    if args.json:
        args.json.write_text(text + "\n", "utf-8")
    print(text)


if __name__ == "__main__":
    main()
