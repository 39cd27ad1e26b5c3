"""``predict_paths``: predict an image, a folder (recursive) or a glob and write the prediction files.

The work runs as a pipeline of bounded stages, so memory stays flat however many images there are:

    loader thread (decode ahead)  ->  main thread (network + merge, batches of equal-sized images)
      ->  pool of writer threads (segment ids, PNG / JSON encoding, atomic writes)

OpenCV and numpy release the GIL while decoding and encoding, so the stages overlap.  On Linux the
loader and writer threads run at a lower priority (nice + ``BACKGROUND_NICENESS``): they need a few
percent of the CPU, and at equal priority they preempt the network's OpenMP threads, whose every
parallel region then waits for the one descheduled; lowered, they run in the network's gaps and
still keep up (the network is the slow stage on the CPU).  A size change
flushes the batch.  Every per-file problem (unreadable, too large, colliding id, a failed write) is
reported by name and counted, never fatal.  Under ``torchrun`` (a ``torch.distributed`` process
group is initialised) each rank predicts a strided share of the inputs and rank 0 writes
``panoptic.json`` after every rank has finished.
"""
from __future__ import annotations

import os
import queue
import sys
import threading
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Callable, Dict, Iterable, List, Optional, Tuple

from pdlkit.errors import DataError, PdlError

from . import distributed
from .io import DEFAULT_MAX_PIXELS, ScanResult, check_image_id, image_id_of, read_image, scan_images
from .writers import PredictionWriter

__all__ = ["PredictSummary", "predict_paths", "BACKGROUND_NICENESS"]

BACKGROUND_NICENESS = 10  # CFS weight ~10x below the network's threads


def _lower_this_thread_priority() -> None:
    """Raise the calling thread's nice value by ``BACKGROUND_NICENESS`` (Linux: per thread;
    elsewhere nothing, as setpriority there applies to the whole process)."""
    by = BACKGROUND_NICENESS
    if by <= 0 or not sys.platform.startswith("linux"):
        return
    try:
        tid = threading.get_native_id()
        os.setpriority(os.PRIO_PROCESS, tid, min(19, os.getpriority(os.PRIO_PROCESS, tid) + by))
    except OSError:  # e.g. a sandbox without setpriority: run at the normal priority
        pass


@dataclass
class PredictSummary:
    """What a run did: counts, per-file failures and the entries the search could not look into."""

    processed: int = 0
    skipped: int = 0  # already done by an earlier run
    failed: List[Tuple[str, str]] = field(default_factory=list)  # (path, reason)
    passed_over: List[Tuple[str, str]] = field(default_factory=list)  # (entry, reason)
    seconds: float = 0.0
    # instrumentation of the bounded stages: the most decoded images alive at once, and its bound
    peak_in_flight: int = 0
    in_flight_limit: int = 0

    @property
    def ok(self) -> bool:
        return not self.failed

    @property
    def images_per_second(self) -> float:
        return self.processed / self.seconds if self.seconds > 0 else 0.0

    def merge(self, other: "PredictSummary") -> None:
        """Add another rank's counts and lists to this one."""
        self.processed += other.processed
        self.skipped += other.skipped
        self.failed += other.failed
        self.passed_over += other.passed_over
        self.seconds = max(self.seconds, other.seconds)

    def __str__(self) -> str:
        text = (f"{self.processed} processed, {self.skipped} skipped (already done), "
                f"{len(self.failed)} failed")
        if self.passed_over:
            text += f", {len(self.passed_over)} entries not searched"
        if self.processed and self.seconds > 0:
            text += f" ({self.images_per_second:.2f} images/s)"
        return text


@dataclass
class _Item:
    path: Path
    rel_dir: str
    image_id: str
    image: Optional[object] = None  # set by the loader; video frames arrive decoded
    error: Optional[str] = None
    record_source: bool = True  # False: no input file to point pdl visualize at (video frames)


_END = object()


# ---------------------------------------------------------------------------------------- planning
def _candidates(scan: ScanResult, output_dir, summary: PredictSummary) -> List[_Item]:
    """Every input with a usable, unique image id, in sorted order; the others become failures."""
    output_root = Path(output_dir).resolve()
    items: List[_Item] = []
    claimed: Dict[str, Path] = {}
    for path, rel_dir in scan.images:
        # an output folder inside the input folder must not feed its own pngs back in on a rerun
        if path.resolve().is_relative_to(output_root):
            continue
        image_id = image_id_of(path)
        try:
            check_image_id(image_id, path)
        except DataError as exc:
            summary.failed.append((str(path), str(exc)))
            continue
        if image_id in claimed:
            summary.failed.append((str(path), (
                f"{path}: same output name (image id {image_id!r}) as {claimed[image_id]}; image ids "
                "are file names without extension and must be unique, rename one")))
            continue
        claimed[image_id] = path
        items.append(_Item(path, rel_dir, image_id))
    return items


def _plan(input, output_dir, writer: PredictionWriter, *, overwrite: bool,
          summary: PredictSummary, world: Tuple[int, int]) -> List[_Item]:
    """This rank's share of the inputs that still need predicting (``world``: rank, world size)."""
    rank, world_size = world
    scan = scan_images(input)
    own = PredictSummary()
    items = _candidates(scan, output_dir, own)
    if rank == 0:  # every rank sees the same input problems; one reports them
        summary.failed += own.failed
        summary.passed_over += scan.skipped
    if not items and not own.failed:
        raise PdlError(f"{input}: no images found outside the output folder {output_dir}")
    todo = []
    for item in distributed.shard(items, rank, world_size):
        if not overwrite and writer.is_done(item.rel_dir, item.image_id):
            summary.skipped += 1
        else:
            todo.append(item)
    return todo


# ---------------------------------------------------------------------------------------- pipeline
def _put(target: "queue.Queue", value, stop: threading.Event) -> bool:
    """Put into a bounded queue, giving up when ``stop`` is set; True when it went in."""
    while not stop.is_set():
        try:
            target.put(value, timeout=0.1)
            return True
        except queue.Full:
            continue
    return False


class _Pipeline:
    """The three stages of the module docstring, with bounded queues between them."""

    def __init__(self, predictor, writer: PredictionWriter, summary: PredictSummary, *,
                 batch_size: int, max_pixels: Optional[int], workers: int, bar,
                 on_predicted: Optional[Callable] = None):
        self.predictor, self.writer, self.summary, self.bar = predictor, writer, summary, bar
        self.on_predicted = on_predicted  # (image, prediction), in input order, on the caller's thread
        self.batch_size, self.max_pixels, self.workers = batch_size, max_pixels, workers
        self.decoded: "queue.Queue" = queue.Queue(maxsize=max(2, 2 * batch_size))
        self.to_write: "queue.Queue" = queue.Queue(maxsize=2 * workers)
        self.stop = threading.Event()
        self.lock = threading.Lock()
        self.in_flight = 0
        # decoded images alive at once: both queues, the batch, one per writer, one blocked per producer
        summary.in_flight_limit = self.decoded.maxsize + self.to_write.maxsize + batch_size + workers + 2

    def _count(self, delta: int) -> None:
        with self.lock:
            self.in_flight += delta
            self.summary.peak_in_flight = max(self.summary.peak_in_flight, self.in_flight)

    def _fail(self, item: _Item, reason: str) -> None:
        with self.lock:
            self.summary.failed.append((str(item.path), reason))
        self.bar.update(1)

    def load(self, items: Iterable[_Item]) -> None:
        """Loader thread: decode in order into ``decoded``; ``_END`` after the last."""
        _lower_this_thread_priority()
        try:
            for item in items:
                if self.stop.is_set():
                    break
                try:
                    if item.image is None:
                        item.image = read_image(item.path, max_pixels=self.max_pixels)
                    self._count(1)
                except PdlError as exc:
                    item.error = str(exc)
                except Exception as exc:  # decoder bugs on odd files: report, don't end the run
                    item.error = f"{item.path}: cannot read the image ({type(exc).__name__}: {exc})"
                if not _put(self.decoded, item, self.stop):
                    break
        finally:
            _put(self.decoded, _END, self.stop)

    def write(self) -> None:
        """Writer thread: encode and write each prediction; ``_END`` stops it."""
        _lower_this_thread_priority()
        while True:
            entry = self.to_write.get()
            if entry is _END:
                return
            item, prediction = entry
            try:
                source = item.path if item.record_source else ""
                self.writer.write(prediction, item.rel_dir, item.image_id, source)
            except Exception as exc:  # a full disk or a bad id ends this image, not the run
                self._fail(item, f"{item.path}: writing the prediction failed ({exc})")
            else:
                with self.lock:
                    self.summary.processed += 1
                self.bar.update(1)
            finally:
                self._count(-1)

    def predict(self, batch: List[_Item]) -> None:
        """Network + merge on one batch, then hand each prediction to the writers."""
        if not batch:
            return
        try:
            predictions = self.predictor.predict_batch([item.image for item in batch])
        except (RuntimeError, ValueError, MemoryError) as exc:  # e.g. out of memory on one size
            predictions = None
            reason = f"{type(exc).__name__}: {str(exc).splitlines()[0] if str(exc) else ''}"
        for index, item in enumerate(batch):
            if predictions is None:
                self._count(-1)
                self._fail(item, f"{item.path}: prediction failed ({reason})")
            else:
                if self.on_predicted is not None:
                    self.on_predicted(item.image, predictions[index])
                _put(self.to_write, (item, predictions[index]), self.stop)
            item.image = None
        batch.clear()

    def run(self, items: Iterable[_Item]) -> None:
        threads = [threading.Thread(target=self.load, args=(items,), name="pdl-decode", daemon=True)]
        threads += [threading.Thread(target=self.write, name=f"pdl-write-{k}", daemon=True)
                    for k in range(self.workers)]
        for thread in threads:
            thread.start()
        try:
            self._consume()
        finally:
            self.stop.set()  # the loader gives up; writers still finish what is queued
            for _ in range(self.workers):
                self.to_write.put(_END)
            for thread in threads:
                thread.join()

    def _consume(self) -> None:
        batch: List[_Item] = []
        while True:
            item = self.decoded.get()
            if item is _END:
                break
            if item.error is not None:
                self._fail(item, item.error)
                continue
            if batch and item.image.shape != batch[0].image.shape:
                self.predict(batch)
            batch.append(item)
            if len(batch) >= self.batch_size:
                self.predict(batch)
        self.predict(batch)


# ---------------------------------------------------------------------------------------- the run
def _default_workers() -> int:
    """Writer threads: half the usable cores (the network keeps the rest), 1 to 4."""
    from pdlkit.threads import usable_cores

    return max(1, min(4, usable_cores() // 2))


def _finish(writer: PredictionWriter, summary: PredictSummary, completed: bool,
            world: Tuple[int, int]) -> PredictSummary:
    """Rebuild ``panoptic.json``: at once in one process; under torchrun by rank 0 once every rank
    is done (an interrupted distributed run leaves it to the rerun).  Returns the summary of all
    ranks on rank 0 and this rank's own elsewhere."""
    rank, world_size = world
    if world_size == 1:
        writer.write_index()
        return summary
    if not completed:
        return summary
    summaries = distributed.all_gather_objects(summary)  # also the barrier: every rank has written
    if rank != 0:
        return summary
    writer.write_index()
    total = PredictSummary()
    for part in summaries:
        total.merge(part)
    return total


def predict_paths(
    predictor,
    input: str | os.PathLike,
    output_dir: str | os.PathLike,
    *,
    batch_size: int = 1,
    overwrite: bool = False,
    save_raw: bool = False,
    progress: bool = True,
    max_pixels: Optional[int] = DEFAULT_MAX_PIXELS,
    workers: Optional[int] = None,
    shard: bool = True,
) -> PredictSummary:
    """Predict every image of ``input`` and write the files of :mod:`pdlkit.inference.writers`.

    input: an image file, a folder (searched recursively; sub-folders mirrored) or a glob.  Images
    already done (their per-image record exists) are skipped unless ``overwrite``.  ``max_pixels``
    (None: no limit) refuses larger images by name; ``workers`` writer threads (default: half the
    usable cores, 1 to 4).
    Returns counts, ``(path, reason)`` for each image that failed and each entry the search passed
    over.  ``shard``: under torchrun, split the inputs across the ranks (False: this process
    predicts all of ``input`` and writes ``panoptic.json`` itself, as when alone).  Raises
    :class:`PdlError` when ``input`` names nothing or holds no images.
    """
    from tqdm import tqdm

    if batch_size < 1:
        raise PdlError(f"batch_size must be at least 1, got {batch_size}", parameter="batch_size")
    if max_pixels is not None and max_pixels < 0:
        raise PdlError(f"max_pixels must be positive, got {max_pixels}", parameter="max_pixels")
    workers = _default_workers() if workers is None else workers
    if workers < 1:
        raise PdlError(f"workers must be at least 1, got {workers}")
    writer = PredictionWriter(output_dir, predictor.spec, save_raw=save_raw)
    summary = PredictSummary()
    world = distributed.world() if shard else (0, 1)
    todo = _plan(input, output_dir, writer, overwrite=overwrite, summary=summary, world=world)
    bar = tqdm(total=len(todo), unit="img", desc="predict", disable=not progress, dynamic_ncols=True)
    pipeline = _Pipeline(predictor, writer, summary, batch_size=batch_size, max_pixels=max_pixels,
                         workers=workers, bar=bar)
    start = time.perf_counter()
    completed = False
    try:
        pipeline.run(todo)
        completed = True
    finally:
        summary.seconds = time.perf_counter() - start
        bar.close()
        summary = _finish(writer, summary, completed, world)
    return summary
