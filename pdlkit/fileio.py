"""Atomic file output: every file pdlkit writes goes through a temporary name in the target folder
and ``os.replace``, so a reader (or a crash) never sees a half-written file; a failure leaves the
previous file untouched and removes the temporary one."""
from __future__ import annotations

import contextlib
import os
import tempfile
from pathlib import Path
from typing import BinaryIO, Callable, Iterator

__all__ = ["atomic_path", "atomic_write", "atomic_write_bytes", "atomic_write_text", "resolve_inside"]


def _file_mode() -> int:
    """The permissions ``open()`` would give a new file (mkstemp's are 0600)."""
    umask = os.umask(0o022)
    os.umask(umask)
    return 0o666 & ~umask


_FILE_MODE = _file_mode()


@contextlib.contextmanager
def atomic_path(path: str | os.PathLike) -> Iterator[Path]:
    """Yield a temporary path beside ``path`` for a writer that wants a file name (onnx.save,
    torch.jit.save); on a clean exit it is renamed to ``path``, on an error removed."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp_name = tempfile.mkstemp(prefix=f".{path.name}.", suffix=".tmp", dir=path.parent)
    try:
        os.fchmod(fd, _FILE_MODE)
        os.close(fd)
        yield Path(tmp_name)
        os.replace(tmp_name, path)
    except BaseException:
        with contextlib.suppress(OSError):
            os.unlink(tmp_name)
        raise


def atomic_write(path: str | os.PathLike, write: Callable[[BinaryIO], None], *, fsync: bool = False) -> None:
    """Call ``write(handle)`` on a binary handle of a temporary file, then rename it to ``path``.
    ``fsync`` flushes the data to disk before the rename (checkpoints)."""
    with atomic_path(path) as tmp:
        with open(tmp, "wb") as handle:
            write(handle)
            if fsync:
                handle.flush()
                os.fsync(handle.fileno())


def atomic_write_bytes(path: str | os.PathLike, data: bytes) -> None:
    atomic_write(path, lambda handle: handle.write(data))


def atomic_write_text(path: str | os.PathLike, text: str) -> None:
    atomic_write_bytes(path, text.encode("utf-8"))


def resolve_inside(root: str | os.PathLike, relative: str | os.PathLike, *, what: str) -> Path:
    """``root / relative`` resolved (symlinks followed), refused unless it stays inside ``root``.

    ``relative`` comes from a file someone else wrote (a dataset or predictions json): an absolute
    path, a ``..`` that climbs out, or a link that points outside ``root`` would read or write
    files the user never named.  ``what`` names the entry in the error, e.g. ``"file_name 'a.png'
    in x.json"``.  Raises :class:`pdlkit.errors.DataError` in one sentence.
    """
    from .errors import DataError

    text = os.fspath(relative)
    if not text or "\x00" in text:
        raise DataError(f"{what}: an empty or malformed path")
    if os.path.isabs(text):
        raise DataError(f"{what}: {text!r} is an absolute path; it must be relative to {root}")
    base = Path(os.path.realpath(root))
    target = Path(os.path.realpath(os.path.join(base, text)))
    if target != base and base not in target.parents:
        raise DataError(f"{what}: {text!r} leads outside {root}; keep every path inside that folder")
    return target
