"""The engine slots of a run (`plan_workers`), and how many vLLM engines share one GPU
(`--engines-per-gpu auto`, the default).

One DeepSeek-OCR engine cannot keep a fast GPU busy: its EngineCore process is bound by one
CPU thread (half of it in the vision encoder path), so a second and third engine on the same
GPU add pages/s until memory or CPU cores run out (H200, 2026-12-02: 1.61× the recipe with
one engine, 1.87× with two). The rule, per GPU:

    by_memory = floor(memory × gpu_memory_utilization / (weights + overhead + min KV))
    by_cpu    = floor(CPU cores per GPU / cores per engine)
    engines   = max(1, min(by_memory, by_cpu, MAX_ENGINES_PER_GPU))

weights: the checkpoint's safetensors (6.67 GB for DeepSeek-OCR when they are not on disk);
overhead: one engine's peak activations, non-torch memory and CUDA graphs (measured on an H200,
Gundam, vLLM 0.26: 2.82 + 0.24 + 0.40 GiB); min KV: enough fp8 KV cache for ~64 Gundam pages in
flight (939 prompt + ~1,000 output tokens at 30 KiB a token). Cores per engine: the EngineCore
thread, its share of rendering/preprocessing and the page worker's loop. The README shows the
arithmetic for L4, A100, H100, H200.

Where the GPU's memory is known, each of K > 1 engines also gets an explicit KV budget
(vLLM's `kv_cache_memory_bytes`: its share of the memory minus weights and overhead), which
skips vLLM's memory profiling: engines then start at once without counting each other's
allocations. Without it they start one after another (the supervisor's gate).
"""

from __future__ import annotations

import os
import shutil
import subprocess
from collections.abc import Mapping
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any

from .config import RunConfig

GIB = 1 << 30
DEEPSEEK_OCR_WEIGHT_BYTES = 6_670_000_000
ENGINE_OVERHEAD_BYTES = int(3.5 * GIB)
# Left unclaimed in each engine's share: allocator fragmentation, the sampler's tensors.
KV_MARGIN_BYTES = GIB // 2
MIN_KV_BYTES = 4 * GIB
CORES_PER_ENGINE = 3
# Measured on H200s with 16 cores (vLLM 0.26, MPS): 5 engines 26.19 pages/s, 204-205 pages on
# each, 4.05x the recipe (2026-12-04, results/gpu-engines-h200-2026-12-04.json); 5 beat 4 on
# two 2026-12-03 leases (26.61 vs 25.38 in one call, 26.21 vs 24.74; noted by hand, their files
# were lost); on a host with faster cores 6 did 25.48 where 4 did 27.35 (…-02d.json). Each
# engine also holds a CUDA context.
MAX_ENGINES_PER_GPU = 5


@dataclass(frozen=True)
class GpuInfo:
    name: str
    memory_bytes: int


@dataclass(frozen=True)
class EnginesPerGpu:
    """The choice and the numbers behind it (written into the run summary)."""

    engines: int
    rule: str
    gpu: str | None = None
    gpu_memory_gib: float | None = None
    gpu_memory_utilization: float | None = None
    weights_gib: float | None = None
    per_engine_gib: float | None = None
    by_memory: int | None = None
    cpu_cores_per_gpu: float | None = None
    by_cpu: int | None = None
    # Each engine's KV cache (vLLM kv_cache_memory_bytes) when K > 1 and the memory is known.
    kv_cache_bytes: int | None = None
    # CUDA MPS (gpu_sharing): whether the engines sharing each GPU ran under it, and why.
    mps: bool = False
    mps_reason: str | None = None

    def as_dict(self) -> dict[str, Any]:
        return asdict(self)


def kv_cache_share(
    gpu: GpuInfo, engines: int, weights_bytes: int, gpu_memory_utilization: float
) -> int | None:
    """One engine's KV budget when `engines` share the GPU; None for a single engine (vLLM's
    own profiling is then exact) or when the share leaves less than the minimum."""
    if engines < 2:
        return None
    share = gpu.memory_bytes * gpu_memory_utilization / engines
    kv = int(share - weights_bytes - ENGINE_OVERHEAD_BYTES - KV_MARGIN_BYTES)
    return kv if kv >= MIN_KV_BYTES else None


def choose_engines_per_gpu(
    gpu: GpuInfo,
    *,
    gpus: int,
    cpu_cores: int,
    weights_bytes: int,
    gpu_memory_utilization: float,
    given: int | None = None,
) -> EnginesPerGpu:
    """The auto rule, or `given` engines (--engines-per-gpu K) with the same numbers beside."""
    per_engine = weights_bytes + ENGINE_OVERHEAD_BYTES + MIN_KV_BYTES
    by_memory = int(gpu.memory_bytes * gpu_memory_utilization // per_engine)
    cores_per_gpu = cpu_cores / max(1, gpus)
    by_cpu = int(cores_per_gpu // CORES_PER_ENGINE)
    engines = given or max(1, min(by_memory, by_cpu, MAX_ENGINES_PER_GPU))
    rule = f"min(memory {by_memory}, CPU {by_cpu}, cap {MAX_ENGINES_PER_GPU}), at least 1"
    return EnginesPerGpu(
        engines=engines,
        rule="given (--engines-per-gpu)" if given else rule,
        gpu=gpu.name,
        gpu_memory_gib=round(gpu.memory_bytes / GIB, 1),
        gpu_memory_utilization=gpu_memory_utilization,
        weights_gib=round(weights_bytes / GIB, 2),
        per_engine_gib=round(per_engine / GIB, 2),
        by_memory=by_memory,
        cpu_cores_per_gpu=round(cores_per_gpu, 1),
        by_cpu=by_cpu,
        kv_cache_bytes=kv_cache_share(gpu, engines, weights_bytes, gpu_memory_utilization),
    )


def model_weight_bytes(model: str) -> int:
    """Bytes of a local checkpoint's weights; DeepSeek-OCR's size for a hub id or a
    checkpoint without weights (a synthetic one run with --load-format dummy)."""
    directory = Path(model).expanduser()
    if directory.is_dir():
        total = sum(f.stat().st_size for f in directory.glob("*.safetensors"))
        if total:
            return total
    return DEEPSEEK_OCR_WEIGHT_BYTES


def gpu_inventory(timeout: float = 20.0) -> list[GpuInfo]:
    """Name and memory of each GPU nvidia-smi lists (no torch import: the parent process of
    a run stays light). Empty where there is no nvidia-smi or it fails."""
    if shutil.which("nvidia-smi") is None:
        return []
    try:
        out = subprocess.run(
            ["nvidia-smi", "--query-gpu=name,memory.total", "--format=csv,noheader,nounits"],
            capture_output=True,
            text=True,
            timeout=timeout,
            check=False,
        ).stdout
    except (OSError, subprocess.TimeoutExpired):
        return []
    gpus = []
    for line in out.splitlines():
        name, _, mib = line.rpartition(",")
        if mib.strip().isdigit():
            gpus.append(GpuInfo(name.strip(), int(mib.strip()) * (1 << 20)))
    return gpus


def available_cores() -> int:
    """Cores this process may run on (a container's or taskset's limit, not the host's)."""
    try:
        return len(os.sched_getaffinity(0))
    except OSError:
        return os.cpu_count() or 1


@dataclass(frozen=True)
class WorkerSpec:
    slot: int
    gpus: tuple[int, ...]  # empty: CPU worker
    render_workers: int
    # Engines sharing this slot's one GPU (their memory is split by the engine's kind); None
    # for a CPU slot and for one engine over a tensor-parallel group.
    engines_on_gpu: int | None = None
    # An explicit KV budget (vLLM kv_cache_memory_bytes): no memory profiling, so engines
    # sharing the GPU may start at once.
    kv_cache_bytes: int | None = None
    # The pipe and log folders of this GPU's MPS daemon (gpu_sharing); None: no MPS.
    mps: tuple[str, str] | None = None

    @property
    def label(self) -> str:
        return f"gpu{','.join(map(str, self.gpus))}" if self.gpus else f"cpu{self.slot}"


def plan_workers(
    config: RunConfig,
    cpu_count: int,
    kv_cache_bytes: int | None = None,
    mps: Mapping[int, tuple[str, str]] | None = None,
) -> list[WorkerSpec]:
    """Slots: one engine per GPU (× engines-per-gpu), or --workers CPU workers."""
    count = config.worker_count
    # Render capacity follows the CPU count, split between engines; past 16 processes per
    # engine, more only costs memory (a GPU engine consumes 10–40 pages/s).
    render = config.render.render_workers or max(1, min(16, cpu_count // max(1, count)))
    if not config.fleet.gpus:
        return [WorkerSpec(slot, (), render) for slot in range(count)]
    tp = config.engine.tensor_parallel_size
    specs: list[WorkerSpec] = []
    if tp > 1:
        groups = [config.fleet.gpus[i : i + tp] for i in range(0, len(config.fleet.gpus), tp)]
        for slot, group in enumerate(g for g in groups if len(g) == tp):
            specs.append(WorkerSpec(slot, tuple(group), render))
        return specs
    per_gpu = config.fleet.engines_per_gpu or 1
    for gpu in config.fleet.gpus:
        for _ in range(per_gpu):
            daemon = (mps or {}).get(gpu)
            specs.append(WorkerSpec(len(specs), (gpu,), render, per_gpu, kv_cache_bytes, daemon))
    return specs
