"""The one backend policy of every op in ``pdlkit.ops``.

Each op takes ``backend="auto" | "native" | "reference"``:

* ``"reference"`` runs the pure-torch code (any device);
* ``"native"`` runs the extension's kernel for the inputs' device and raises
  :class:`NativeOpsUnavailable` when there is none (extension not built, or built without CUDA for
  CUDA inputs, or a device pdlkit has no kernel for);
* ``"auto"`` runs the native kernel when there is one, else the reference, with one
  ``RuntimeWarning`` per reason and process.

Loading the extension also registers the ops' fake kernels (``_fake.py``), so ``torch.compile`` and
FakeTensor tracing see through them; ``meta`` tensors therefore count as native.
"""
from __future__ import annotations

import warnings

import torch

from pdlkit.errors import PdlError

__all__ = ["BACKENDS", "NativeOpsUnavailable", "native_available", "native_cuda_available", "use_native"]

BACKENDS = ("auto", "native", "reference")


class NativeOpsUnavailable(PdlError, RuntimeError):
    """``backend="native"`` was asked for, but the extension has no kernel for these inputs."""


_UNLOADED = object()
_native_error: object = _UNLOADED  # None once loaded, else the import error's text


def _load_native() -> str | None:
    """Import the extension once (registering ``torch.ops.pdlkit.*`` and the fake kernels); return
    the error text on failure, None on success.  A plain module variable rather than lru_cache, so
    that torch.compile traces this without warnings."""
    global _native_error
    if _native_error is _UNLOADED:
        try:
            import pdlkit._C  # noqa: F401
        except (ImportError, OSError) as exc:
            _native_error = str(exc)
        else:
            from . import _fake

            _fake.register()
            _native_error = None
    return _native_error


def native_available() -> bool:
    """True when ``pdlkit._C`` (the native CPU kernels) can be imported."""
    return _load_native() is None


def native_cuda_available() -> bool:
    """True when ``pdlkit._C`` was built with its CUDA kernels."""
    if not native_available():
        return False
    import pdlkit._C as native

    return bool(native.with_cuda)


def _missing_kernel(device: torch.device) -> str | None:
    """Why the extension cannot run on ``device``, or None when it can."""
    if not native_available():
        return (f"pdlkit._C (the native extension) cannot be imported ({_load_native()}); build it with "
                "`pip install --no-build-isolation -e .`")
    if device.type in ("cpu", "meta"):
        return None
    if device.type == "cuda":
        if native_cuda_available():
            return None
        return ("pdlkit._C was built without its CUDA kernels; rebuild it on a machine with nvcc: "
                "`PDL_WITH_CUDA=1 pip install --no-build-isolation -e .`")
    return f"pdlkit._C has no kernels for {device.type} tensors"


_warned: set = set()


def _warn_fallback(reason: str) -> None:
    """One RuntimeWarning per reason and process."""
    if reason not in _warned:
        _warned.add(reason)
        warnings.warn(f"{reason}; using the slow pure-torch reference ops", RuntimeWarning, stacklevel=4)


def use_native(backend: str, device: torch.device | str = "cpu") -> bool:
    """True to run the native op on ``device``, False for the reference (see the module doc).

    Raises ValueError on an unknown ``backend`` and :class:`NativeOpsUnavailable` when
    ``backend="native"`` cannot be honoured.
    """
    if backend not in BACKENDS:
        raise ValueError(f"backend must be one of {BACKENDS}, got {backend!r}")
    if backend == "reference":
        return False
    reason = _missing_kernel(torch.device(device))
    if reason is None:
        return True
    if backend == "native":
        raise NativeOpsUnavailable(f"backend='native' asked for, but {reason}")
    _warn_fallback(reason)
    return False
