"""Checkpoints moved to :mod:`pdlkit.checkpoint` (below inference in the layer order); these names
stay importable from here for existing code."""
from ..checkpoint import (  # noqa: F401
    LAST_CHECKPOINT_FILE,
    capture_rng_state,
    load_checkpoint,
    read_last_checkpoint,
    restore_rng_state,
    save_checkpoint,
    write_last_checkpoint,
)
