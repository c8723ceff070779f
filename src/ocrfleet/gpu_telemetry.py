"""GPU telemetry: each GPU worker samples NVML (utilisation, memory, power, temperature)
every few seconds into the ledger's gpu_samples table, for the progress line, the run
summary's per-GPU means and the report's charts.

NVML is reached through one small seam (`Nvml`): pynvml (nvidia-ml-py, in the vllm extra) on
a GPU machine, or the `module:factory` named by OCRFLEET_NVML (tests use a fake NVML on CPU).
Without NVML the worker runs as before, with no samples: telemetry never stops a run.
GPU indices are NVML's, as nvidia-smi numbers them (the indices of --gpus).
"""

from __future__ import annotations

import contextlib
import importlib
import logging
import os
import sqlite3
import threading
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Protocol

log = logging.getLogger(__name__)

NVML_ENV = "OCRFLEET_NVML"
INSERT = (
    "INSERT INTO gpu_samples (t, worker, gpu, util, mem_used_mib, mem_total_mib, power_w, "
    "temp_c) VALUES (?, ?, ?, ?, ?, ?, ?, ?)"
)


@dataclass(frozen=True)
class GpuSample:
    gpu: int
    util: float | None  # percent of the last sample period the GPU was busy
    mem_used_mib: float | None
    mem_total_mib: float | None
    power_w: float | None
    temp_c: float | None


class Nvml(Protocol):
    def sample(self, gpu: int) -> GpuSample: ...

    def close(self) -> None: ...


class PynvmlBackend:
    """NVML through pynvml; a reading the GPU does not support is None, not an error."""

    def __init__(self) -> None:
        import pynvml

        self._nvml: Any = pynvml
        pynvml.nvmlInit()

    def _read(self, fn: str, *args: Any) -> Any:
        try:
            return getattr(self._nvml, fn)(*args)
        except self._nvml.NVMLError:
            return None

    def sample(self, gpu: int) -> GpuSample:
        handle = self._read("nvmlDeviceGetHandleByIndex", gpu)
        if handle is None:
            return GpuSample(gpu, None, None, None, None, None)
        rates = self._read("nvmlDeviceGetUtilizationRates", handle)
        memory = self._read("nvmlDeviceGetMemoryInfo", handle)
        power = self._read("nvmlDeviceGetPowerUsage", handle)  # milliwatts
        temp = self._read("nvmlDeviceGetTemperature", handle, self._nvml.NVML_TEMPERATURE_GPU)
        mib = 1024 * 1024
        return GpuSample(
            gpu,
            float(rates.gpu) if rates is not None else None,
            memory.used / mib if memory is not None else None,
            memory.total / mib if memory is not None else None,
            power / 1000.0 if power is not None else None,
            float(temp) if temp is not None else None,
        )

    def close(self) -> None:
        with contextlib.suppress(Exception):
            self._nvml.nvmlShutdown()


def load_nvml() -> Nvml | None:
    """The NVML backend of this machine, or None (no pynvml, no driver): logged, not raised."""
    spec = os.environ.get(NVML_ENV)
    try:
        if spec:
            module_name, _, attr = spec.partition(":")
            backend: Nvml = getattr(importlib.import_module(module_name), attr)()
            return backend
        return PynvmlBackend()
    except Exception as exc:
        log.warning("no GPU telemetry: NVML is not available (%s: %s)", type(exc).__name__, exc)
        return None


class GpuSampler:
    """A thread that writes one sample per GPU every `interval` seconds (and one at start
    and at stop, so even a short run has its numbers). It has its own ledger connection."""

    def __init__(
        self, db_path: Path, worker: str, gpus: tuple[int, ...], nvml: Nvml, interval: float
    ) -> None:
        self.db_path, self.worker, self.gpus = db_path, worker, gpus
        self.nvml, self.interval = nvml, interval
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._loop, name="ocrfleet-gpu", daemon=True)

    def sample_once(self, db: sqlite3.Connection) -> None:
        now = time.time()
        rows = []
        for gpu in self.gpus:
            s = self.nvml.sample(gpu)
            rows.append(
                (
                    now,
                    self.worker,
                    gpu,
                    s.util,
                    s.mem_used_mib,
                    s.mem_total_mib,
                    s.power_w,
                    s.temp_c,
                )
            )
        with db:
            db.executemany(INSERT, rows)

    def _loop(self) -> None:
        db = sqlite3.connect(self.db_path, timeout=60)
        try:
            while True:
                try:
                    self.sample_once(db)
                except Exception as exc:  # a busy ledger or a flaky reading: skip this one
                    log.warning("GPU sample skipped: %s", exc)
                if self._stop.wait(self.interval):
                    with contextlib.suppress(Exception):
                        self.sample_once(db)
                    return
        finally:
            db.close()

    def start(self) -> GpuSampler:
        self._thread.start()
        return self

    def stop(self) -> None:
        self._stop.set()
        self._thread.join(timeout=10)
        self.nvml.close()


def start_gpu_sampler(
    db_path: Path, worker: str, gpus: tuple[int, ...], interval: float
) -> GpuSampler | None:
    """A running sampler for a GPU worker; None for a CPU worker or without NVML."""
    if not gpus or interval <= 0:
        return None
    nvml = load_nvml()
    return GpuSampler(db_path, worker, gpus, nvml, interval).start() if nvml else None


# ---- reading, in the supervisor -----------------------------------------------------------


def latest_utilisation(db: sqlite3.Connection, since: float) -> dict[str, float]:
    """The last utilisation sampled of each GPU since `since`: {"gpu0": 87.0, …}."""
    rows = db.execute(
        "SELECT gpu, util, MAX(t) FROM gpu_samples WHERE t >= ? AND util IS NOT NULL "
        "GROUP BY gpu ORDER BY gpu",
        (since,),
    )
    return {f"gpu{r[0]}": float(r[1]) for r in rows}


def gpu_means(db: sqlite3.Connection, since: float) -> dict[str, dict[str, Any]]:
    """Per GPU, the means of this run's samples (the run summary's `gpus`)."""
    rows = db.execute(
        "SELECT gpu, COUNT(*), AVG(util), AVG(mem_used_mib), MAX(mem_used_mib), "
        "MAX(mem_total_mib), AVG(power_w), AVG(temp_c) FROM gpu_samples WHERE t >= ? "
        "GROUP BY gpu ORDER BY gpu",
        (since,),
    )

    def r1(value: float | None) -> float | None:
        return None if value is None else round(float(value), 1)

    return {
        f"gpu{r[0]}": {
            "samples": int(r[1]),
            "util_mean_percent": r1(r[2]),
            "memory_mean_mib": r1(r[3]),
            "memory_peak_mib": r1(r[4]),
            "memory_total_mib": r1(r[5]),
            "power_mean_w": r1(r[6]),
            "temperature_mean_c": r1(r[7]),
        }
        for r in rows
    }


class GpuReadings:
    """The supervisor's view of its workers' samples (its own read connection, throttled)."""

    def __init__(self, db_path: Path, since: float, every: float = 2.0) -> None:
        self.db_path, self.since, self.every = db_path, since, every
        self._last_read = 0.0
        self._util: dict[str, float] = {}

    def _query(self, fn: Any) -> Any:
        db = sqlite3.connect(self.db_path, timeout=5)
        try:
            return fn(db, self.since)
        finally:
            db.close()

    def utilisation(self) -> dict[str, float]:
        now = time.monotonic()
        if now - self._last_read >= self.every:
            self._last_read = now
            with contextlib.suppress(sqlite3.Error):  # a busy ledger: show the last values
                self._util = self._query(latest_utilisation)
        return self._util

    def means(self) -> dict[str, dict[str, Any]]:
        try:
            means: dict[str, dict[str, Any]] = self._query(gpu_means)
        except sqlite3.Error as exc:
            log.warning("GPU means unavailable: %s", exc)
            return {}
        return means
