"""Training: the training loop (Adam + warmup-poly, AMP, DDP), its data order, schedule and logs.

``train(cfg, evaluate=...)`` is what ``pdl train`` calls.  Checkpoints live one layer below, in
:mod:`pdlkit.checkpoint`; ``save_checkpoint`` / ``load_checkpoint`` / ``read_last_checkpoint`` are
re-exported here for existing code.
"""
from ..checkpoint import load_checkpoint, read_last_checkpoint, save_checkpoint
from .trainer import DamagedResumeError, NonFiniteLossError, Trainer, TrainingInterrupted, train

__all__ = ["train", "Trainer", "save_checkpoint", "load_checkpoint", "read_last_checkpoint", "TrainingInterrupted",
           "NonFiniteLossError", "DamagedResumeError"]
