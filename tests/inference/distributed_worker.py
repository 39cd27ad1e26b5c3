"""Run by torchrun from test_distributed.py: ``pdl`` with its arguments, where the rank named by
PDL_TEST_CRASH_RANK dies abruptly (os._exit, as under kill -9) once it has written
PDL_TEST_CRASH_AFTER images."""
from __future__ import annotations

import os
import sys
import threading


def _crash_after_writes(count: int) -> None:
    from pdlkit.inference.writers import PredictionWriter

    real_write = PredictionWriter.write
    lock = threading.Lock()
    written = [0]

    def write(self, *args, **kwargs):
        real_write(self, *args, **kwargs)
        with lock:
            written[0] += 1
            if written[0] >= count:
                os._exit(17)

    PredictionWriter.write = write


if __name__ == "__main__":
    if "PDL_TEST_CRASH_RANK" in os.environ and os.environ.get("RANK") == os.environ["PDL_TEST_CRASH_RANK"]:
        _crash_after_writes(int(os.environ["PDL_TEST_CRASH_AFTER"]))
    from pdlkit.cli.main import main

    sys.exit(main(sys.argv[1:]))
