"""Panoptic-DeepLab's hot paths: target encoding, center NMS, grouping + majority-vote merge.

Each op runs natively (``pdlkit._C``, CPU and CUDA, registered as ``torch.ops.pdlkit.*``) or through
its pure-torch reference of the same signature; ``backend="native" | "reference" | "auto"``.
"""
from ._backend import native_available
from .center_nms import (
    find_instance_centers,
    find_instance_centers_batched,
    find_instance_centers_reference,
)
from .encode_targets import encode_targets, encode_targets_reference
from .panoptic_merge import (
    PanopticResult,
    panoptic_merge,
    panoptic_merge_batched,
    panoptic_merge_reference,
)

__all__ = [
    "native_available",
    "encode_targets",
    "encode_targets_reference",
    "find_instance_centers",
    "find_instance_centers_reference",
    "find_instance_centers_batched",
    "panoptic_merge",
    "panoptic_merge_reference",
    "panoptic_merge_batched",
    "PanopticResult",
]
