"""Run by torchrun from test_distributed.py: ``pdl`` with its arguments, where the rank named by
PDL_TEST_CRASH_RANK dies abruptly (os._exit, as under kill -9) once it has written
PDL_TEST_CRASH_AFTER images.  With PDL_TEST_RANK_DIRS each rank gets a temporary folder of its own
under it (as separate machines would) and writes there which images it scored."""
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


def _own_temp_dir_and_score_log(base: str) -> None:
    """This rank's TMPDIR is ``base/rank<R>/tmp``; ``base/rank<R>/scored.json`` lists each share it
    scored: its image ids and the predictions folder they were read from."""
    import json
    import tempfile
    from pathlib import Path

    folder = Path(base) / f"rank{os.environ.get('RANK', '0')}"
    (folder / "tmp").mkdir(parents=True, exist_ok=True)
    os.environ["TMPDIR"] = str(folder / "tmp")
    tempfile.tempdir = None
    import pdlkit.evaluation.run as run

    real_score = run.score_images

    def score_images(data_root, split, predictions_dir, **kwargs):
        share = real_score(data_root, split, predictions_dir, **kwargs)
        log = folder / "scored.json"
        done = json.loads(log.read_text()) if log.is_file() else []
        done.append({"image_ids": kwargs.get("image_ids"), "num_images": share.num_images,
                     "predictions": str(predictions_dir)})
        log.write_text(json.dumps(done))
        return share

    run.score_images = score_images


if __name__ == "__main__":
    if "PDL_TEST_RANK_DIRS" in os.environ:
        _own_temp_dir_and_score_log(os.environ["PDL_TEST_RANK_DIRS"])
    if "PDL_TEST_CRASH_RANK" in os.environ and os.environ.get("RANK") == os.environ["PDL_TEST_CRASH_RANK"]:
        _crash_after_writes(int(os.environ["PDL_TEST_CRASH_AFTER"]))
    from pdlkit.cli.main import main

    sys.exit(main(sys.argv[1:]))
