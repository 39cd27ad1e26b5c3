"""pdlkit: Panoptic-DeepLab (Cheng et al., CVPR 2020) as a toolkit.

The library is importable without the CLI: ``pdlkit.ops`` (native hot paths), ``pdlkit.data``,
``pdlkit.modeling``, ``pdlkit.engine``, ``pdlkit.inference``, ``pdlkit.evaluation``.
"""
__version__ = "0.1.0"

__all__ = ["__version__", "Predictor"]


def __getattr__(name):  # keep `import pdlkit` light: torch loads only when needed
    if name == "Predictor":
        from .inference import Predictor

        return Predictor
    raise AttributeError(f"module 'pdlkit' has no attribute {name!r}")
