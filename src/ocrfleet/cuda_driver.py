"""Which NVIDIA driver the CUDA build of the installed torch/vLLM wheels needs.

A wheel built for CUDA 12.8 (torch 2.9+cu128, which vLLM 0.26 wheels are built against)
runs on any driver of the CUDA 12 family's floor through CUDA minor-version compatibility,
and on the toolkit's own minimum without restrictions (PTX JIT included). Below the family
floor it cannot initialise CUDA at all: torch.cuda.is_available() is False, or vLLM dies at
start with "CUDA driver version is insufficient". Numbers from NVIDIA's CUDA release notes
(Table 3, Linux x86_64).
"""

from __future__ import annotations

import re
from dataclasses import dataclass

# CUDA major: the oldest driver that runs any toolkit of that major (minor-version compat).
FAMILY_FLOOR: dict[int, tuple[int, ...]] = {
    11: (450, 80, 2),
    12: (525, 60, 13),
    13: (580, 65, 6),
}
# CUDA major.minor: the driver the toolkit ships with (full compatibility).
TOOLKIT_DRIVER: dict[tuple[int, int], tuple[int, ...]] = {
    (11, 8): (520, 61, 5),
    (12, 0): (525, 60, 13),
    (12, 1): (530, 30, 2),
    (12, 2): (535, 54, 3),
    (12, 3): (545, 23, 6),
    (12, 4): (550, 54, 14),
    (12, 5): (555, 42, 2),
    (12, 6): (560, 28, 3),
    (12, 8): (570, 26),
    (12, 9): (575, 51, 3),
    (13, 0): (580, 65, 6),
}


@dataclass(frozen=True)
class DriverVerdict:
    ok: bool
    detail: str
    fix: str | None = None


def _parse(version: str) -> tuple[int, ...]:
    return tuple(int(p) for p in re.findall(r"\d+", version))


def _show(version: tuple[int, ...]) -> str:
    return ".".join(str(p) for p in version)


def check_driver_for_cuda(torch_cuda: str | None, driver: str | None) -> DriverVerdict:
    """Does `driver` (nvidia-smi's driver_version) run wheels built for CUDA `torch_cuda`?"""
    if not torch_cuda or not driver:
        return DriverVerdict(False, "unknown: no torch CUDA build or no driver version")
    cuda = _parse(torch_cuda)[:2]
    have = _parse(driver)
    floor = FAMILY_FLOOR.get(cuda[0])
    if floor is None:
        return DriverVerdict(True, f"CUDA {torch_cuda}: no known driver floor; driver {driver}")
    built = f"torch/vLLM wheels built for CUDA {torch_cuda}"
    if have < floor:
        return DriverVerdict(
            False,
            f"driver {driver} is too old for {built} (needs ≥ {_show(floor)})",
            f"install NVIDIA driver ≥ {_show(TOOLKIT_DRIVER.get((cuda[0], cuda[1]), floor))} "
            "(AWS: a current Deep Learning Base GPU AMI), or a torch/vLLM built for an older "
            "CUDA",
        )
    full = TOOLKIT_DRIVER.get((cuda[0], cuda[1]))
    if full is not None and have < full:
        return DriverVerdict(
            True,
            f"driver {driver} runs {built} through minor-version compatibility (≥ "
            f"{_show(floor)}); ≥ {_show(full)} recommended",
        )
    return DriverVerdict(True, f"driver {driver} runs {built}")
