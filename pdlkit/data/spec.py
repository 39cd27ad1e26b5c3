"""The dataset spec: what a train id means (name, dataset category id, thing flag, colour).

Every dataset (Cityscapes, COCO panoptic, the toy set, a user's own data in either format) goes
through one :class:`DatasetSpec`.  Train ids are contiguous ``0 .. num_classes - 1``; the dataset's
own category ids (Cityscapes label ids, COCO category ids) are what files on disk use.
Checkpoints carry ``spec.to_dict()`` so that inference needs nothing but the checkpoint.
"""
from __future__ import annotations

from dataclasses import dataclass
from typing import Any, Mapping, Sequence

from ..errors import DataError

__all__ = [
    "DatasetSpec",
    "cityscapes_spec",
    "coco_spec_from_categories",
    "spec_for",
    "UNKNOWN_DATASET",
]

# Dataset names that use the Cityscapes layout and label ids.
CITYSCAPES_LAYOUT_NAMES = ("cityscapes", "toy")
UNKNOWN_DATASET = ("unknown dataset {name!r}: expected cityscapes, toy or coco (coco: any COCO-panoptic "
                   "dataset prepared with `pdl prepare coco`, `vistas` or `panoptic`)")


@dataclass(frozen=True)
class DatasetSpec:
    """Meaning of each train id ``t`` in ``0 .. num_classes - 1``.

    ``class_names[t]``, ``category_ids[t]`` (the dataset's id, e.g. a Cityscapes label id),
    ``is_thing[t]`` and ``colors[t]`` (RGB 0-255).  Panoptic ids are
    ``train_id * label_divisor + instance``; ``ignore_label`` marks unlabelled pixels in semantic maps.
    """

    name: str
    class_names: tuple
    category_ids: tuple
    is_thing: tuple
    colors: tuple
    label_divisor: int = 1000
    ignore_label: int = 255

    def __post_init__(self) -> None:
        # Accept lists (e.g. from JSON) but store tuples so the spec stays hashable and immutable.
        object.__setattr__(self, "class_names", tuple(str(n) for n in self.class_names))
        object.__setattr__(self, "category_ids", tuple(int(c) for c in self.category_ids))
        object.__setattr__(self, "is_thing", tuple(bool(t) for t in self.is_thing))
        object.__setattr__(self, "colors", tuple(tuple(int(v) for v in c) for c in self.colors))
        n = len(self.class_names)
        if n == 0:
            raise DataError(f"dataset spec {self.name!r} has no classes")
        for field_name in ("category_ids", "is_thing", "colors"):
            if len(getattr(self, field_name)) != n:
                raise DataError(
                    f"dataset spec {self.name!r}: {field_name} has {len(getattr(self, field_name))} "
                    f"entries but there are {n} class names"
                )
        if len(set(self.category_ids)) != n:
            raise DataError(f"dataset spec {self.name!r}: category ids are not unique")
        if any(len(c) != 3 for c in self.colors):
            raise DataError(f"dataset spec {self.name!r}: every colour must be an (r, g, b) triple")
        if self.label_divisor < 1:
            raise DataError(f"dataset spec {self.name!r}: label_divisor must be positive")
        if 0 <= self.ignore_label < n:
            raise DataError(
                f"dataset spec {self.name!r}: ignore_label {self.ignore_label} is a valid train id"
            )

    # ------------------------------------------------------------------ derived
    @property
    def num_classes(self) -> int:
        return len(self.class_names)

    @property
    def thing_ids(self) -> tuple:
        """Train ids of the thing classes, ascending."""
        return tuple(t for t, thing in enumerate(self.is_thing) if thing)

    @property
    def stuff_ids(self) -> tuple:
        """Train ids of the stuff classes, ascending."""
        return tuple(t for t, thing in enumerate(self.is_thing) if not thing)

    @property
    def category_to_train_id(self) -> dict:
        """Dataset category id -> train id (categories not listed have no train id)."""
        return {c: t for t, c in enumerate(self.category_ids)}

    # ------------------------------------------------------------------ (de)serialisation
    def to_dict(self) -> dict:
        """Plain JSON-able dict (lists, ints, strings); ``from_dict`` inverts it."""
        return {
            "name": self.name,
            "class_names": list(self.class_names),
            "category_ids": list(self.category_ids),
            "is_thing": list(self.is_thing),
            "colors": [list(c) for c in self.colors],
            "label_divisor": int(self.label_divisor),
            "ignore_label": int(self.ignore_label),
        }

    @classmethod
    def from_dict(cls, data: Mapping[str, Any]) -> "DatasetSpec":
        if not isinstance(data, Mapping):
            raise DataError(f"a dataset spec must be a mapping, got {type(data).__name__}")
        required = ("name", "class_names", "category_ids", "is_thing", "colors")
        missing = [k for k in required if k not in data]
        if missing:
            raise DataError(f"dataset spec is missing {', '.join(missing)}")
        unknown = sorted(set(data) - set(required) - {"label_divisor", "ignore_label"})
        if unknown:
            raise DataError(f"dataset spec has unknown keys {', '.join(unknown)}")
        try:
            return cls(
                name=str(data["name"]),
                class_names=data["class_names"],
                category_ids=data["category_ids"],
                is_thing=data["is_thing"],
                colors=data["colors"],
                label_divisor=int(data.get("label_divisor", 1000)),
                ignore_label=int(data.get("ignore_label", 255)),
            )
        except (TypeError, ValueError) as exc:
            if isinstance(exc, DataError):
                raise
            raise DataError(f"dataset spec is malformed ({exc})") from None


def cityscapes_spec() -> DatasetSpec:
    """The 19 Cityscapes train ids (cityscapesscripts' ``labels``), label divisor 1000.

    Things: person, rider, car, truck, bus, train, motorcycle, bicycle.
    """
    from cityscapesscripts.helpers.labels import labels

    by_train_id = {}
    for label in labels:
        if 0 <= label.trainId < 255 and not label.ignoreInEval:
            by_train_id[label.trainId] = label
    train_ids = sorted(by_train_id)
    if train_ids != list(range(len(train_ids))):  # pragma: no cover - guards a changed upstream table
        raise RuntimeError(f"cityscapesscripts train ids are not contiguous: {train_ids}")
    chosen = [by_train_id[t] for t in train_ids]
    return DatasetSpec(
        name="cityscapes",
        class_names=tuple(label.name for label in chosen),
        category_ids=tuple(label.id for label in chosen),
        is_thing=tuple(label.hasInstances for label in chosen),
        colors=tuple(label.color for label in chosen),
    )


def coco_spec_from_categories(categories: Sequence[Mapping[str, Any]], *, name: str = "coco") -> DatasetSpec:
    """COCO panoptic ``categories`` -> spec; train ids follow the ascending category id."""
    ordered = sorted(categories, key=lambda c: int(c["id"]))
    colors = []
    for cat in ordered:
        color = cat.get("color")
        if color is None:
            # COCO panoptic ships colours; a user's own json may not: derive a stable one from the id.
            cid = int(cat["id"])
            color = ((cid * 67) % 256, (cid * 131) % 256, (cid * 29 + 80) % 256)
        colors.append(tuple(color))
    return DatasetSpec(
        name=name,
        class_names=tuple(str(c["name"]) for c in ordered),
        category_ids=tuple(int(c["id"]) for c in ordered),
        is_thing=tuple(bool(c.get("isthing", 0)) for c in ordered),
        colors=tuple(colors),
    )


def spec_for(data_cfg) -> DatasetSpec:
    """The spec of the dataset a :class:`pdlkit.config.DataConfig` names.

    ``dataset`` ``cityscapes`` / ``toy``: :func:`cityscapes_spec`.  ``coco`` (any COCO-panoptic
    dataset): the categories that ``pdl prepare coco|vistas|panoptic`` stored in ``data_cfg.root``.
    """
    dataset = str(data_cfg.dataset).lower()
    if dataset in CITYSCAPES_LAYOUT_NAMES:
        return cityscapes_spec()
    if dataset == "coco":
        # coco_format builds on this module (DatasetSpec), so it is imported here, on use
        from .coco_format import manifest_spec

        return manifest_spec(data_cfg.root)
    raise DataError(UNKNOWN_DATASET.format(name=data_cfg.dataset))
