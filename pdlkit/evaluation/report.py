"""Plain-text table of :func:`pdlkit.evaluation.evaluate_predictions`' results."""
from __future__ import annotations

from typing import Dict, Optional

__all__ = ["format_results"]


def _number(value: Optional[float], width: int = 6) -> str:
    return f"{value:{width}.1f}" if value is not None else f"{'-':>{width}}"


def format_results(results: Dict) -> str:
    """Per class PQ/SQ/RQ, IoU and (when computed) AP/AP50, then the all/things/stuff summary."""
    has_ap = "AP" in results
    header = f"{'class':<15}{'PQ':>6} {'SQ':>6} {'RQ':>6} {'IoU':>6}"
    if has_ap:
        header += f" {'AP':>6} {'AP50':>6}"
    lines = [header, "-" * len(header)]
    per_class_ap = results.get("per_class_ap", {})
    names = list(results["per_class"])
    for name in results.get("per_class_iou", {}):
        if name not in results["per_class"]:
            names.append(name)
    for name in names:
        pq = results["per_class"].get(name)
        row = f"{name[:14]:<15}"
        if pq is not None and pq.get("present", True):
            row += f"{_number(pq['PQ'])} {_number(pq['SQ'])} {_number(pq['RQ'])}"
        else:
            row += f"{_number(None)} {_number(None)} {_number(None)}"
        row += f" {_number(results.get('per_class_iou', {}).get(name))}"
        if has_ap:
            ap = per_class_ap.get(name)
            row += f" {_number(ap['AP'] if ap else None)} {_number(ap['AP50'] if ap else None)}"
        lines.append(row)
    lines.append("-" * len(header))
    lines.append(f"{'':<15}{'PQ':>6} {'SQ':>6} {'RQ':>6} {'n':>6}")
    for label, group in (("all", results), ("things", results["things"]), ("stuff", results["stuff"])):
        lines.append(
            f"{label:<15}{_number(group['PQ'])} {_number(group['SQ'])} {_number(group['RQ'])} {group['n']:>6d}"
        )
    lines.append("-" * len(header))
    summary = f"mIoU {_number(results.get('mIoU')).strip()}"
    if has_ap:
        summary += f"   AP {_number(results['AP']).strip()}   AP50 {_number(results['AP50']).strip()}"
    summary += f"   ({results.get('num_images', 0)} images, values in percent)"
    lines.append(summary)
    return "\n".join(lines)
