"""``predict_video``: panoptic predictions of every frame of a video file or a camera.

Frames are read by OpenCV one at a time on the loader thread of the prediction pipeline (decoded
ahead of the network, never the whole video in memory) and written as the usual per-image files
named by frame index: ``DIR/panoptic/frame_000000.png``, ... .  With ``video_out`` an overlay video
(the frame with its panoptic overlay) is written at the source frame rate by one thread in frame
order; it appears under its name only when complete.  A camera is given by its index ("0"); with
``preview`` and a display, its overlays are shown live until ``q`` is pressed.
"""
from __future__ import annotations

import os
import queue
import threading
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Callable, Iterator, Optional

from pdlkit.errors import DataError, PdlError

from .runner import PredictSummary, _Item, _Pipeline, _put
from .writers import PredictionWriter

__all__ = ["VIDEO_EXTENSIONS", "VideoInfo", "is_video_input", "open_video", "predict_video"]

VIDEO_EXTENSIONS = (".mp4", ".avi", ".mov", ".mkv", ".webm", ".m4v", ".mpg", ".mpeg", ".wmv", ".flv",
                    ".ts", ".mts")
_FOURCC = {".avi": "MJPG", ".mkv": "MJPG"}  # everything else: MPEG-4 part 2, in every OpenCV build


def is_video_input(source) -> bool:
    """A camera index ("0") or a file name with a video extension."""
    text = str(source)
    return text.isdigit() or Path(text).suffix.lower() in VIDEO_EXTENSIONS


@dataclass
class VideoInfo:
    fps: float
    frame_count: int  # 0 when unknown (cameras, some streams)
    is_camera: bool


def open_video(source):
    """``(cv2.VideoCapture, VideoInfo)`` of a video file or a camera index; :class:`PdlError` when
    OpenCV cannot open it."""
    import cv2

    text = str(source)
    is_camera = text.isdigit()
    if not is_camera and not Path(text).is_file():
        raise PdlError(f"{text}: no such video file")
    capture = cv2.VideoCapture(int(text) if is_camera else text)
    if not capture.isOpened():
        what = f"camera {text}" if is_camera else text
        raise DataError(f"{what}: OpenCV cannot open this video")
    fps = float(capture.get(cv2.CAP_PROP_FPS) or 0.0)
    count = int(capture.get(cv2.CAP_PROP_FRAME_COUNT) or 0)
    return capture, VideoInfo(fps=fps if fps > 0 else 30.0, frame_count=max(count, 0), is_camera=is_camera)


def _frames(capture, name: str, skip, summary: PredictSummary, bar) -> Iterator[_Item]:
    """Frame items in order, decoded to RGB; frames ``skip(image_id)`` accepts are grabbed only."""
    import cv2

    index = 0
    while True:
        image_id = f"frame_{index:06d}"
        if skip(image_id):
            if not capture.grab():
                return
            summary.skipped += 1
            bar.update(1)
        else:
            ok, frame = capture.read()
            if not ok:
                return
            image = cv2.cvtColor(frame, cv2.COLOR_BGR2RGB)
            yield _Item(Path(f"{name} frame {index}"), "", image_id, image=image, record_source=False)
        index += 1


class _OverlayVideo:
    """One thread drawing overlays and appending them to a video, in frame order, bounded."""

    def __init__(self, path, fps: float, draw):
        self.path, self.fps, self.draw = Path(path), fps, draw
        self.partial = self.path.with_name(f".{self.path.stem}.partial{self.path.suffix}")
        self.frames: "queue.Queue" = queue.Queue(maxsize=4)
        self.stop = threading.Event()
        self.writer = None
        self.error: Optional[str] = None
        self.count = 0
        self.thread = threading.Thread(target=self._run, name="pdl-video-out", daemon=True)
        self.thread.start()

    def add(self, image, prediction) -> None:
        if self.error is None:
            _put(self.frames, (image, prediction), self.stop)

    def _open(self, width: int, height: int):
        import cv2

        self.path.parent.mkdir(parents=True, exist_ok=True)
        fourcc = cv2.VideoWriter_fourcc(*_FOURCC.get(self.path.suffix.lower(), "mp4v"))
        writer = cv2.VideoWriter(str(self.partial), fourcc, self.fps, (width, height))
        if not writer.isOpened():
            raise DataError(f"{self.path}: OpenCV cannot write a video of this type (try .mp4 or .avi)")
        return writer

    def _run(self) -> None:
        import cv2

        while True:
            entry = self.frames.get()
            if entry is None:
                return
            if self.error is not None:
                continue
            image, prediction = entry
            try:
                if self.writer is None:
                    self.writer = self._open(image.shape[1], image.shape[0])
                overlay = self.draw(image, prediction)
                self.writer.write(cv2.cvtColor(overlay, cv2.COLOR_RGB2BGR))
                self.count += 1
            except Exception as exc:  # a full disk or a codec error: stop the video, not the run
                self.error = str(exc) if isinstance(exc, PdlError) else f"{self.path}: {exc}"

    def close(self, completed: bool) -> Optional[str]:
        """Finish the file (renamed into place when ``completed``); returns an error or None."""
        self.frames.put(None)
        self.thread.join()
        if self.writer is not None:
            self.writer.release()
        if completed and self.error is None and self.count:
            os.replace(self.partial, self.path)
        elif self.partial.exists():
            self.partial.unlink()
        return self.error


def _has_display() -> bool:
    return bool(os.environ.get("DISPLAY") or os.environ.get("WAYLAND_DISPLAY")) or os.name == "nt"


class _Preview:
    """Live overlays in a window (caller's thread, as GUI toolkits want); ``q`` stops the run."""

    def __init__(self, draw, stop: threading.Event):
        self.draw, self.stop = draw, stop

    def show(self, image, prediction) -> None:
        import cv2

        overlay = self.draw(image, prediction)
        cv2.imshow("pdl predict", cv2.cvtColor(overlay, cv2.COLOR_RGB2BGR))
        if cv2.waitKey(1) & 0xFF == ord("q"):
            self.stop.set()


def _hooks(*hooks):
    active = [hook for hook in hooks if hook is not None]
    if not active:
        return None

    def call(image, prediction):
        for hook in active:
            hook(image, prediction)
    return call


def predict_video(
    predictor,
    source,
    output_dir: str | os.PathLike,
    *,
    video_out: str | os.PathLike | None = None,
    batch_size: int = 1,
    overwrite: bool = False,
    save_raw: bool = False,
    progress: bool = True,
    workers: Optional[int] = None,
    preview: Optional[bool] = None,
    draw: Optional[Callable] = None,
) -> PredictSummary:
    """Predict every frame of ``source`` (a video file OpenCV reads, or a camera index) into
    ``output_dir`` (files named ``frame_<index>``) and, with ``video_out``, an overlay video at the
    source frame rate.  Frames already done are skipped unless ``overwrite`` or ``video_out`` (which
    needs every frame).  ``preview`` (default: for a camera, when a display exists) shows overlays
    live.  ``draw(image, prediction) -> [H, W, 3] uint8 RGB`` makes the overlay frames (e.g. with
    :func:`pdlkit.visualize.panoptic_overlay`; drawing lives above this layer).  Returns the summary
    counted in frames.
    """
    from tqdm import tqdm

    from .runner import _default_workers

    if video_out and draw is None:
        raise PdlError("an overlay video needs draw=, the function that draws a frame's overlay")
    capture, info = open_video(source)
    writer = PredictionWriter(output_dir, predictor.spec, save_raw=save_raw)
    summary = PredictSummary()
    sink = _OverlayVideo(video_out, info.fps, draw) if video_out else None
    bar = tqdm(total=info.frame_count or None, unit="frame", desc="video", disable=not progress,
               dynamic_ncols=True)
    pipeline = _Pipeline(predictor, writer, summary, batch_size=batch_size, max_pixels=None,
                         workers=workers or _default_workers(), bar=bar)
    show = (info.is_camera and _has_display() if preview is None else preview) and draw is not None
    pipeline.on_predicted = _hooks(sink.add if sink else None,
                                   _Preview(draw, pipeline.stop).show if show else None)
    resume = not overwrite and sink is None and not info.is_camera
    frames = _frames(capture, str(source), lambda image_id: resume and writer.is_done("", image_id),
                     summary, bar)
    completed = False
    start = time.perf_counter()
    try:
        pipeline.run(frames)
        completed = True
    finally:
        summary.seconds = time.perf_counter() - start
        capture.release()
        bar.close()
        error = sink.close(completed) if sink else None
        if error:
            summary.failed.append((str(video_out), error))
        writer.write_index()
    return summary
