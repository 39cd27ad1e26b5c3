"""Training: checkpoints (atomic), the training loop (Adam + warmup-poly, AMP, DDP), logging.

``train(cfg)`` is what ``pdl train`` calls; ``save_checkpoint`` / ``load_checkpoint`` read and write
the one-file checkpoints of DESIGN.md §3 that ``pdl predict`` / ``pdl eval`` take.
"""
from .checkpoint import load_checkpoint, read_last_checkpoint, save_checkpoint

__all__ = ["train", "save_checkpoint", "load_checkpoint", "read_last_checkpoint", "TrainingInterrupted",
           "NonFiniteLossError"]


def __getattr__(name):  # the loop pulls in data / modeling / inference: load it only when asked
    if name in ("train", "TrainingInterrupted", "NonFiniteLossError", "Trainer"):
        from . import trainer

        return getattr(trainer, name)
    raise AttributeError(f"module 'pdlkit.engine' has no attribute {name!r}")
