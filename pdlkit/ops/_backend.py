"""Choosing between the native extension (``pdlkit._C``) and the pure-torch references.

``backend="auto"`` takes the native op when the extension is built (warning once when it is not),
``"native"`` demands it, ``"reference"`` forces the pure-torch code.
"""
from __future__ import annotations

import functools
import warnings

__all__ = ["native_available", "use_native", "BACKENDS"]

BACKENDS = ("auto", "native", "reference")


@functools.lru_cache(maxsize=None)
def _load_native() -> str | None:
    """Import the extension (registering ``torch.ops.pdlkit.*``); return the error text on failure."""
    try:
        import pdlkit._C  # noqa: F401
    except (ImportError, OSError) as exc:
        return str(exc)
    return None


def native_available() -> bool:
    return _load_native() is None


@functools.lru_cache(maxsize=None)
def _warn_fallback() -> None:
    warnings.warn(
        "pdlkit._C (the native extension) is not built; using the slow pure-torch reference ops. "
        f"Build it with `pip install --no-build-isolation -e .` ({_load_native()})",
        RuntimeWarning,
        stacklevel=3,
    )


def use_native(backend: str) -> bool:
    """True to run the native op, False for the reference; raises ValueError on a bad name."""
    if backend not in BACKENDS:
        raise ValueError(f"backend must be one of {BACKENDS}, got {backend!r}")
    if backend == "reference":
        return False
    if native_available():
        return True
    if backend == "native":
        raise RuntimeError(f"backend='native' asked for, but pdlkit._C cannot be imported: {_load_native()}")
    _warn_fallback()
    return False
