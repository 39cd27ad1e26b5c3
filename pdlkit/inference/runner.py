"""``predict_paths``: predict an image, a folder (recursive) or a glob and write DESIGN.md §3 files.

A background thread decodes images ahead of the network (OpenCV releases the GIL while decoding);
consecutive images of equal size are batched up to ``batch_size``, a size change flushes the batch.
Unreadable files are reported by name and counted, never fatal.
"""
from __future__ import annotations

import os
import queue
import threading
from dataclasses import dataclass, field
from pathlib import Path
from typing import List, Optional, Tuple

from pdlkit.errors import PdlError

from .io import find_images, image_id_of, read_image
from .writers import PredictionWriter

__all__ = ["PredictSummary", "predict_paths"]


@dataclass
class PredictSummary:
    processed: int = 0
    skipped: int = 0
    failed: List[Tuple[str, str]] = field(default_factory=list)  # (path, reason)

    @property
    def ok(self) -> bool:
        return not self.failed

    def __str__(self) -> str:
        text = f"{self.processed} processed, {self.skipped} skipped (already done), {len(self.failed)} failed"
        return text


@dataclass
class _Item:
    path: Path
    rel_dir: str
    image_id: str
    image: Optional[object] = None
    error: Optional[str] = None


_END = object()


def _loader(items: List[_Item], out: "queue.Queue", stop: threading.Event) -> None:
    """Decode images in order into ``out``; ``_END`` after the last (or when stopped)."""
    try:
        for item in items:
            if stop.is_set():
                break
            try:
                item.image = read_image(item.path)
            except PdlError as exc:
                item.error = str(exc)
            except Exception as exc:  # decoder bugs on odd files: report, don't kill the run
                item.error = f"{item.path}: cannot read the image ({type(exc).__name__}: {exc})"
            while not stop.is_set():
                try:
                    out.put(item, timeout=0.1)
                    break
                except queue.Full:
                    continue
    finally:
        while True:
            try:
                out.put(_END, timeout=0.1)
                break
            except queue.Full:
                if stop.is_set():
                    break


def predict_paths(
    predictor,
    input: str | os.PathLike,
    output_dir: str | os.PathLike,
    *,
    batch_size: int = 1,
    overwrite: bool = False,
    save_raw: bool = False,
    progress: bool = True,
) -> PredictSummary:
    """Predict every image of ``input`` and write the files of DESIGN.md §3 under ``output_dir``.

    input: an image file, a folder (searched recursively; sub-folders mirrored) or a glob.  Images
    already done (their per-image record exists) are skipped unless ``overwrite``.  Returns counts of
    processed and skipped images and ``(path, reason)`` for each image that could not be read.
    Raises :class:`PdlError` when ``input`` names nothing or holds no images.
    """
    from tqdm import tqdm

    if batch_size < 1:
        raise PdlError(f"--batch-size must be at least 1, got {batch_size}")
    pairs = find_images(input)
    # an output folder inside the input folder must not feed its own pngs back in on a rerun
    output_root = Path(output_dir).resolve()
    pairs = [(path, rel) for path, rel in pairs if not path.resolve().is_relative_to(output_root)]
    if not pairs:
        raise PdlError(f"{input}: no images found outside the output folder {output_dir}")
    writer = PredictionWriter(output_dir, predictor.spec, save_raw=save_raw)
    summary = PredictSummary()

    todo: List[_Item] = []
    claimed = {}
    for path, rel_dir in pairs:
        image_id = image_id_of(path)
        key = (rel_dir, image_id)
        if key in claimed:  # e.g. a.png and a.jpg in one folder: same output names
            summary.failed.append((str(path), f"{path}: same output name as {claimed[key]}"))
            continue
        claimed[key] = path
        if not overwrite and writer.is_done(rel_dir, image_id):
            summary.skipped += 1
            continue
        todo.append(_Item(path, rel_dir, image_id))

    loaded: "queue.Queue" = queue.Queue(maxsize=max(2, 2 * batch_size))
    stop = threading.Event()
    thread = threading.Thread(target=_loader, args=(todo, loaded, stop), name="pdl-image-loader", daemon=True)
    bar = tqdm(total=len(todo), unit="img", desc="predict", disable=not progress, dynamic_ncols=True)
    batch: List[_Item] = []

    def flush() -> None:
        if not batch:
            return
        predictions = predictor.predict_batch([item.image for item in batch])
        for item, prediction in zip(batch, predictions):
            writer.write(prediction, item.rel_dir, item.image_id, item.path)
            item.image = None
            summary.processed += 1
        bar.update(len(batch))
        batch.clear()

    thread.start()
    try:
        while True:
            item = loaded.get()
            if item is _END:
                break
            if item.error is not None:
                summary.failed.append((str(item.path), item.error))
                bar.update(1)
                continue
            if batch and (item.image.shape != batch[0].image.shape or len(batch) >= batch_size):
                flush()
            batch.append(item)
            if len(batch) >= batch_size:
                flush()
        flush()
    finally:
        stop.set()
        thread.join(timeout=5)
        bar.close()
        writer.write_index()
    return summary
