"""A fake NVML for GPU telemetry tests on CPU.

Selected with OCRFLEET_NVML=tests.fake_nvml:FakeNvml.

Readings are fixed per GPU, so a test can check the means the run summary reports:
utilisation 30 + 20 × index %, memory (index + 1) GiB used of 80 GiB, 250 + index W, 50 + index °C.
"""

from __future__ import annotations

from ocrfleet.gpu_telemetry import GpuSample


class FakeNvml:
    def __init__(self) -> None:
        self.closed = False

    def sample(self, gpu: int) -> GpuSample:
        return GpuSample(gpu, 30.0 + 20 * gpu, 1024.0 * (gpu + 1), 81920.0, 250.0 + gpu, 50.0 + gpu)

    def close(self) -> None:
        self.closed = True
