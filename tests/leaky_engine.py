"""An engine that leaks every secret it was given, every way a real engine might (tests only):
its config into logs, raw writes to fds 1 and 2, a child process's output, a traceback."""

from __future__ import annotations

import logging
import os
import subprocess
import sys
import traceback

from ocrfleet.config import EngineConfig
from tests.fakes import ScriptedEngine

log = logging.getLogger("vllm.leaky")


class LeakyEngine(ScriptedEngine):
    async def start(self) -> None:
        args = self.config_args
        line = f"engine args {args} token {os.environ.get('HF_TOKEN')}\n"
        os.write(1, line.encode())
        os.write(2, line.encode())
        print(f"connecting to {args.get('endpoint')}", file=sys.stderr, flush=True)
        subprocess.run(["sh", "-c", f"echo child sees {args.get('endpoint')}"], check=False)
        try:
            raise RuntimeError(f"denied for key {os.environ.get('AWS_ACCESS_KEY_ID')}")
        except RuntimeError:
            traceback.print_exc()
        log.warning("engine config: %s", args)
        await super().start()


def leaky(config: EngineConfig) -> LeakyEngine:
    engine = LeakyEngine(config)
    engine.config_args = dict(config.extra_args)
    return engine
