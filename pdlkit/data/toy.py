"""A synthetic street-scene dataset in the exact Cityscapes layout, deterministic by seed.

Each image is a list of labelled polygons (the Cityscapes ``*_gtFine_polygons.json``), drawn back to
front: sky, buildings, trees, sidewalk, terrain, road, then thing instances sorted by their ground
contact (far ones first, so near ones occlude them), crowd groups, unlabelled clutter and sometimes the
ego vehicle.  The label maps are rasterised from that json by cityscapesscripts' own
``createLabelImage`` / ``createInstanceImage`` (so ``labelTrainIds`` made later from the json equals
``labelIds``), and the picture is painted polygon by polygon with the same rasteriser, so pixels and
labels agree exactly.

Cues are class-specific but noisy: cars have a random body colour, a dark window band and wheels;
persons a skin-toned head, a shirt and dark trousers; riders a bright helmet and jacket and sit on a
bicycle; bicycles are dark rings and a frame; trucks a cabin and a pale cargo box.  Sizes follow
perspective (about 8 px far away to half the image height near the camera), instances occlude each
other, and same-class neighbours differ only by colour and a darker outline.

Files per image (``{city}_{seq:06d}_000019``): ``leftImg8bit/{split}/{city}/..._leftImg8bit.png``
(RGB) and ``gtFine/{split}/{city}/..._gtFine_{labelIds,instanceIds,color}.png`` +
``_gtFine_polygons.json``; instance ids are ``label_id * 1000 + k`` (k from 0 per class, in drawing
order), crowd groups carry the bare label id, unlabelled pixels label id 0; instanceIds are 16-bit.
"""
from __future__ import annotations

import functools
import json
from dataclasses import dataclass
from pathlib import Path
from typing import Callable

import numpy as np

from ..errors import DataError
from ..io import read_json, write_json, write_png

__all__ = ["generate_toy", "render_toy_image", "toy_scene_polygons", "TOY_CITIES", "TOY_MARKER",
           "TOY_GENERATOR_VERSION"]

TOY_CITIES = {"train": ("toyburg", "mockton"), "val": ("synthville",)}
TOY_MARKER = "pdlkit_toy.json"  # parameters of a generated toy set; written last
# Bumped whenever the same parameters would give other pictures, so an old folder is not taken as current.
TOY_GENERATOR_VERSION = 2
_FRAME = 19  # Cityscapes' annotated frame number


@dataclass
class _Object:
    label: str  # a Cityscapes label name, or "<thing>group" for a crowd region
    polygon: np.ndarray  # [P, 2] (x, y) integer pixel coordinates
    paint: Callable  # paint(rng, ys, xs, box, fields) -> [n, 3] float colours of the pixels
    box: tuple  # (x0, y0, w, h) of the shape before clipping: texture coordinates


# ----------------------------------------------------------------------------- shapes
# Unit silhouettes: (x, y) in [0, 1]^2, y downwards, scaled into a (x0, y0, w, h) box.
_CAR = np.array([(0, 1), (0, .45), (.12, .40), (.26, .04), (.72, 0), (.86, .38), (1, .46), (1, 1)], float)
_TRUCK = np.array([(0, 1), (0, 0), (.74, 0), (.74, .28), (.92, .30), (1, .55), (1, 1)], float)
_PERSON = np.array([
    (.42, 0), (.58, 0), (.60, .13), (.80, .18), (.82, .50), (.72, .52), (.72, 1), (.54, 1), (.50, .62),
    (.46, 1), (.28, 1), (.28, .52), (.18, .50), (.20, .18), (.40, .13)], float)
_RIDER = np.array([
    (.35, 0), (.55, 0), (.58, .14), (.90, .34), (.90, .46), (.62, .44), (.66, .76), (.56, 1), (.42, 1),
    (.40, .72), (.22, .62), (.20, .26), (.33, .14)], float)


def _bicycle_shape() -> np.ndarray:
    """Outline of two wheels joined by a frame, in a unit box (wheels: radius .3 of the height)."""
    r_y, r_x = 0.30, 0.30 / 1.7  # the box is 1.7 times wider than high
    left, right = (0.18, 0.68), (0.82, 0.68)
    pts = [(left[0], left[1] - r_y), (0.30, 0.12), (0.70, 0.06), (right[0], right[1] - r_y)]
    for a in np.linspace(-np.pi / 2, np.pi / 2, 7)[1:]:  # right wheel, top -> right -> bottom
        pts.append((right[0] + r_x * np.cos(a), right[1] + r_y * np.sin(a)))
    pts.append((0.5, 0.78))  # notch between the wheels
    for a in np.linspace(np.pi / 2, 3 * np.pi / 2, 7)[:-1]:  # left wheel, bottom -> left -> top
        pts.append((left[0] + r_x * np.cos(a), left[1] + r_y * np.sin(a)))
    return np.clip(np.array(pts, float), 0, 1)


_BICYCLE = _bicycle_shape()


def _place(shape: np.ndarray, rng, box, *, flip: bool, jitter: float = 0.025) -> np.ndarray:
    x0, y0, w, h = box
    pts = shape.copy()
    if flip:
        pts[:, 0] = 1 - pts[:, 0]
    pts = pts + rng.normal(0, jitter, pts.shape)
    return np.stack([x0 + pts[:, 0] * w, y0 + pts[:, 1] * h], axis=1)


def _blob(rng, cx, cy, rx, ry, n=14, wobble=0.18) -> np.ndarray:
    angles = np.sort(rng.uniform(0, 2 * np.pi, n))
    radius = 1 + rng.uniform(-wobble, wobble, n)
    return np.stack([cx + rx * radius * np.cos(angles), cy + ry * radius * np.sin(angles)], axis=1)


# ----------------------------------------------------------------------------- painting
# fields: per-image noise fields, each [H, W] float32: "fine" N(0,1), "blotch" (cell ~5 px),
# "cloud" (cell ~H/4).  ys, xs: pixel coordinates of the object's visible mask.
def _rel(ys, xs, box):
    x0, y0, w, h = box
    return (ys - y0) / max(h, 1e-6), (xs - x0) / max(w, 1e-6)


def _color(base, n):
    return np.broadcast_to(np.asarray(base, np.float32), (n, 3)).copy()


def _paint_sky(rng, ys, xs, box, f, horizon):
    top = np.array([80, 130, 200]) + rng.normal(0, 10, 3)
    bottom = np.array([175, 200, 225]) + rng.normal(0, 8, 3)
    t = np.clip(ys / max(horizon, 1), 0, 1)[:, None]
    c = top * (1 - t) + bottom * t
    clouds = np.clip(f["cloud"][ys, xs], 0, None)[:, None] * rng.uniform(0, 45)
    return c + clouds


def _paint_building(rng, ys, xs, box, f):
    palette = np.array([[150, 118, 96], [118, 118, 126], [172, 150, 118], [104, 88, 80], [140, 140, 150]])
    c = _color(palette[rng.integers(len(palette))] + rng.normal(0, 12, 3), len(ys))
    px, py = rng.integers(5, 10), rng.integers(6, 11)
    ox, oy = rng.integers(0, px), rng.integers(0, py)
    window = (((xs + ox) % px) < px // 2) & (((ys + oy) % py) < py // 2)
    c[window] = c[window] * 0.45 + np.array([40, 50, 70]) * 0.55
    return c + f["blotch"][ys, xs, None] * 6


def _paint_vegetation(rng, ys, xs, box, f):
    base = np.array([68, 118, 40]) + rng.normal(0, 10, 3)
    return base + f["blotch"][ys, xs, None] * np.array([14, 26, 10]) + f["fine"][ys, xs, None] * 6


def _paint_terrain(rng, ys, xs, box, f):
    base = np.array([150, 168, 92]) + rng.normal(0, 8, 3)
    return base + f["fine"][ys, xs, None] * 10


def _paint_sidewalk(rng, ys, xs, box, f):
    c = _color(np.array([184, 174, 168]) + rng.normal(0, 8, 3), len(ys))
    tile = rng.integers(6, 11)
    seam = ((xs % tile) == 0) | ((ys % tile) == 0)
    c[seam] *= 0.78
    return c + f["fine"][ys, xs, None] * 4


def _paint_road(rng, ys, xs, box, f, lane):
    c = _color(np.array([84, 84, 90]) + rng.normal(0, 6, 3), len(ys))
    c += f["fine"][ys, xs, None] * 7
    if lane is not None:
        (vx, vy), bottom_x, dash = lane
        depth = np.clip((ys - vy) / max(box[3], 1), 1e-3, None)
        line_x = vx + (bottom_x - vx) * depth
        half = 0.4 + 2.2 * depth
        marking = (np.abs(xs - line_x) < half) & ((np.floor(np.sqrt(depth) * dash) % 2) == 0)
        c[marking] = np.array([225, 225, 215])
    return c


def _paint_unlabeled(rng, ys, xs, box, f):
    base = rng.uniform(40, 200, 3)
    return base + f["blotch"][ys, xs, None] * rng.uniform(10, 40, 3)


def _paint_ego(rng, ys, xs, box, f):
    v, u = _rel(ys, xs, box)
    c = _color([28, 30, 36], len(ys))
    c += (1 - v)[:, None] * 30  # a highlight on the top of the hood
    return c


def _wheels(c, v, u, centers_u, radius_v, aspect):
    for cu in centers_u:
        d = np.sqrt(((u - cu) * aspect) ** 2 + ((v - 0.86) / 1.0) ** 2)
        c[d < radius_v] = np.array([22, 22, 24])
    return c


def _paint_car(rng, ys, xs, box, f):
    palette = np.array([[180, 30, 30], [30, 60, 160], [190, 190, 195], [235, 235, 235], [30, 30, 34],
                        [30, 100, 60], [220, 180, 40], [120, 70, 140]])
    v, u = _rel(ys, xs, box)
    c = _color(palette[rng.integers(len(palette))] + rng.normal(0, 15, 3), len(ys))
    windows = (v < 0.42) & (v > 0.06)
    c[windows] = np.array([52, 62, 80]) + rng.normal(0, 5, 3)
    c *= (1.08 - 0.16 * v)[:, None]  # the body darkens towards the ground
    aspect = box[2] / max(box[3], 1e-6)
    return _wheels(c, v, u, (0.2, 0.8), 0.16, aspect) + f["fine"][ys, xs, None] * 4


def _paint_truck(rng, ys, xs, box, f, flipped):
    v, u = _rel(ys, xs, box)
    if flipped:
        u = 1 - u
    cargo_color = np.array([[225, 225, 220], [200, 200, 205], [215, 200, 150]])[rng.integers(3)]
    c = _color(cargo_color + rng.normal(0, 8, 3), len(ys))
    cabin = u > 0.74
    c[cabin] = np.array([40, 70, 150]) + rng.normal(0, 25, 3)
    c[cabin & (v < 0.55) & (v > 0.33)] = np.array([52, 62, 80])
    ribs = (~cabin) & ((np.floor(u * 14) % 2) == 0)
    c[ribs] *= 0.9
    aspect = box[2] / max(box[3], 1e-6)
    return _wheels(c, v, u, (0.15, 0.55, 0.85), 0.12, aspect) + f["fine"][ys, xs, None] * 4


def _skin(rng):
    tones = np.array([[235, 200, 170], [200, 150, 110], [150, 100, 70], [100, 65, 45]])
    return tones[rng.integers(len(tones))] + rng.normal(0, 8, 3)


def _paint_person(rng, ys, xs, box, f):
    v, u = _rel(ys, xs, box)
    shirts = np.array([[90, 90, 110], [150, 40, 40], [60, 110, 150], [200, 200, 200], [70, 110, 70],
                       [130, 100, 60]])
    trousers = np.array([[40, 50, 90], [30, 30, 30], [80, 60, 40], [110, 110, 110]])
    c = _color(trousers[rng.integers(len(trousers))] + rng.normal(0, 8, 3), len(ys))
    c[v < 0.55] = shirts[rng.integers(len(shirts))] + rng.normal(0, 12, 3)
    c[v < 0.15] = _skin(rng)
    c[v < 0.04] = np.array([45, 30, 20])  # hair
    return c + f["fine"][ys, xs, None] * 5


def _paint_rider(rng, ys, xs, box, f):
    v, u = _rel(ys, xs, box)
    jackets = np.array([[250, 130, 20], [170, 240, 40], [230, 30, 30], [40, 200, 220], [250, 220, 30]])
    helmets = np.array([[245, 245, 245], [240, 200, 0], [220, 20, 20], [20, 20, 20]])
    c = _color(np.array([35, 35, 45]) + rng.normal(0, 8, 3), len(ys))  # dark trousers
    c[v < 0.5] = jackets[rng.integers(len(jackets))] + rng.normal(0, 12, 3)
    c[v < 0.15] = _skin(rng)
    c[v < 0.09] = helmets[rng.integers(len(helmets))] + rng.normal(0, 6, 3)
    return c + f["fine"][ys, xs, None] * 5


def _paint_bicycle(rng, ys, xs, box, f):
    v, u = _rel(ys, xs, box)
    aspect = box[2] / max(box[3], 1e-6)
    frame_color = np.array([[200, 30, 30], [30, 30, 30], [40, 90, 200], [220, 220, 220]])[rng.integers(4)]
    c = _color(np.array([120, 118, 112]) + rng.normal(0, 10, 3), len(ys))  # seen through the frame
    for cu in (0.18, 0.82):
        d = np.sqrt(((u - cu) * aspect) ** 2 + (v - 0.68) ** 2)
        c[np.abs(d - 0.25) < 0.07] = np.array([18, 18, 20])  # tyres
        c[d < 0.04] = np.array([150, 150, 150])  # hubs
    bar = (np.abs(v - (0.68 - 0.55 * (u - 0.18) / 0.64)) < 0.07) & (u > 0.18) & (u < 0.82)
    top = (np.abs(v - 0.2) < 0.06) & (u > 0.28) & (u < 0.74)
    c[bar | top] = frame_color
    return c + f["fine"][ys, xs, None] * 4


# ----------------------------------------------------------------------------- the scene
def _thing(rng, kind, x_center, ground_y, size, *, crowd=False):
    """One thing object (or, for a rider, a bicycle and a rider) standing on ``ground_y``."""
    label = kind + "group" if crowd else kind
    flip = bool(rng.integers(2))
    if kind == "car":
        h = size * 0.55
        w = h * rng.uniform(1.6, 2.3)
        box = (x_center - w / 2, ground_y - h, w, h)
        return [_Object(label, _place(_CAR, rng, box, flip=flip), _paint_car, box)]
    if kind == "truck":
        h = size * 0.95
        w = h * rng.uniform(1.7, 2.3)
        box = (x_center - w / 2, ground_y - h, w, h)
        return [_Object(label, _place(_TRUCK, rng, box, flip=flip),
                        lambda r, ys, xs, b, f: _paint_truck(r, ys, xs, b, f, flip), box)]
    if kind == "person":
        h = size * rng.uniform(0.75, 0.95)
        w = h * rng.uniform(0.34, 0.44)
        box = (x_center - w / 2, ground_y - h, w, h)
        return [_Object(label, _place(_PERSON, rng, box, flip=flip), _paint_person, box)]
    if kind == "bicycle":
        h = size * 0.45
        w = h * 1.7
        box = (x_center - w / 2, ground_y - h, w, h)
        return [_Object(label, _place(_BICYCLE, rng, box, flip=flip, jitter=0.015), _paint_bicycle, box)]
    if kind == "rider":  # the bicycle first: the rider's legs cover part of its frame
        bike = _thing(rng, "bicycle", x_center, ground_y, size)
        h = size * 0.8
        w = h * 0.55
        box = (x_center - w / 2, ground_y - size * 0.25 - h, w, h)
        return bike + [_Object(label, _place(_RIDER, rng, box, flip=flip), _paint_rider, box)]
    raise ValueError(kind)


def _add(objects: list, label, polygon, paint, box=None) -> None:
    """Append an object; ``box`` defaults to the polygon's bounding box."""
    polygon = np.asarray(polygon, float)
    if box is None:
        lo, hi = polygon.min(0), polygon.max(0)
        box = (lo[0], lo[1], hi[0] - lo[0] + 1, hi[1] - lo[1] + 1)
    objects.append(_Object(label, polygon, paint, box))


def _add_background(add, rng, H: float, W: float, horizon: float) -> None:
    """Sky, a skyline of buildings, trees in front of them, the sidewalk and grass verges."""
    add("sky", [(0, 0), (W, 0), (W, horizon + 2), (0, horizon + 2)],
        lambda r, ys, xs, b, f: _paint_sky(r, ys, xs, b, f, horizon))
    # skyline: buildings of random width and height, sometimes a gap that shows the sky
    x = -rng.uniform(0, 0.1) * W
    while x < W:
        w = W * rng.uniform(0.12, 0.3)
        if rng.uniform() > 0.15:
            top = horizon - H * rng.uniform(0.1, 0.36)
            roof = top - H * rng.uniform(0, 0.06)
            add("building", [(x, horizon + 3), (x, top), (x + w / 2, roof), (x + w, top), (x + w, horizon + 3)],
                _paint_building)
        x += w
    for _ in range(rng.integers(1, 4)):  # trees in front of the buildings
        r = H * rng.uniform(0.06, 0.14)
        cx = rng.uniform(0, W)
        cy = horizon - r * rng.uniform(0.6, 1.4)
        add("vegetation", _blob(rng, cx, cy, r * rng.uniform(1, 1.5), r), _paint_vegetation)
        add("vegetation", [(cx - r * 0.12, cy), (cx + r * 0.12, cy), (cx + r * 0.15, horizon + 2),
                           (cx - r * 0.15, horizon + 2)], _paint_vegetation)
    add("sidewalk", [(0, horizon), (W, horizon), (W, H), (0, H)], _paint_sidewalk)
    for _ in range(rng.integers(0, 3)):  # grass verges on the sidewalk
        cx = rng.choice([rng.uniform(0, 0.2), rng.uniform(0.8, 1.0)]) * W
        cy = horizon + (H - horizon) * rng.uniform(0.1, 0.6)
        r = H * rng.uniform(0.05, 0.12)
        add("terrain", _blob(rng, cx, cy, r * 1.8, r * 0.6, wobble=0.1), _paint_terrain)


def _add_road(add, rng, H: float, W: float, horizon: float, vanish_x: float) -> tuple:
    """The road towards the vanishing point (lane markings most of the time); returns the x of its
    left and right edges at the bottom of the image."""
    half_top = W * 0.02
    left_bottom = vanish_x - W * rng.uniform(0.55, 0.9)
    right_bottom = vanish_x + W * rng.uniform(0.55, 0.9)
    lane = ((vanish_x, horizon), vanish_x + rng.uniform(-0.1, 0.1) * W, rng.integers(4, 8)) \
        if rng.uniform() < 0.7 else None
    road_box = (0, horizon, W, H - horizon)
    add("road", [(vanish_x - half_top, horizon), (vanish_x + half_top, horizon), (right_bottom, H),
                 (left_bottom, H)], lambda r, ys, xs, b, f: _paint_road(r, ys, xs, b, f, lane), road_box)
    return left_bottom, right_bottom


def _street_things(rng, H: float, W: float, horizon: float, vanish_x: float, road_edges: tuple) -> list:
    """[(ground y, [objects])] of cars, people, riders, bicycles and trucks in perspective (tiny
    near the horizon, large near the camera), plus sometimes a crowd."""
    left_bottom, right_bottom = road_edges
    ground_span = H - horizon
    things = []
    counts = {"car": rng.integers(1, 6), "person": rng.integers(1, 6), "rider": rng.integers(0, 3),
              "bicycle": rng.integers(0, 3), "truck": int(rng.uniform() < 0.5)}
    for kind, count in counts.items():
        for _ in range(count):
            depth = rng.uniform(0.15, 1.05)  # fraction of the ground below the horizon
            ground_y = horizon + depth * ground_span
            on_road = kind in ("car", "truck", "rider") or rng.uniform() < 0.3
            if on_road:
                lo = vanish_x + (left_bottom - vanish_x) * depth
                hi = vanish_x + (right_bottom - vanish_x) * depth
                x_center = rng.uniform(max(lo, 0), min(hi, W))
            else:
                x_center = rng.uniform(0, W)
            size = depth * ground_span * rng.uniform(0.85, 1.25)
            things.append((ground_y, _thing(rng, kind, x_center, ground_y, size)))
    if rng.uniform() < 0.45:
        things.append(_crowd(rng, W, horizon, ground_span))
    return things


def _crowd(rng, W: float, horizon: float, ground_span: float) -> tuple:
    """(ground y, members): a cluster of overlapping members labelled "<kind>group"."""
    kind = ("person", "car", "bicycle")[rng.integers(3)]
    depth = rng.uniform(0.12, 0.4)
    ground_y = horizon + depth * ground_span
    x_center = rng.uniform(0.1, 0.9) * W
    size = depth * ground_span
    members = []
    for _ in range(rng.integers(3, 7)):
        dx = rng.normal(0, size * (0.35 if kind == "person" else 0.6))
        dy = rng.normal(0, size * 0.05)
        members += _thing(rng, kind, x_center + dx, ground_y + dy, size, crowd=True)
    return ground_y, members


def _add_foreground(add, rng, H: float, W: float, horizon: float) -> None:
    """Unlabelled clutter (label id 0) and sometimes the ego vehicle's hood along the bottom."""
    for _ in range(rng.integers(1, 4)):
        cx, cy = rng.uniform(0, W), rng.uniform(horizon * 0.5, H)
        r = H * rng.uniform(0.02, 0.06)
        add("unlabeled", _blob(rng, cx, cy, r * rng.uniform(0.6, 1.6), r), _paint_unlabeled)
    if rng.uniform() < 0.4:
        top = H * rng.uniform(0.9, 0.95)
        pts = [(0, H), (0, top + H * 0.03)] + [(x, top + H * 0.03 * ((2 * x / W - 1) ** 2))
                                                for x in np.linspace(0, W, 9)[1:-1]] + [(W, top + H * 0.03), (W, H)]
        add("ego vehicle", pts, _paint_ego)


def _scene(rng, height: int, width: int) -> list:
    """The objects of one street scene, back to front: background, road, things (far ones first),
    foreground.  The random draws happen in a fixed order, so a seed always gives the same scene."""
    H, W = float(height), float(width)
    horizon = H * rng.uniform(0.36, 0.5)
    vanish_x = W * rng.uniform(0.35, 0.65)
    objects: list = []
    add = functools.partial(_add, objects)
    _add_background(add, rng, H, W, horizon)
    road_edges = _add_road(add, rng, H, W, horizon, vanish_x)
    things = _street_things(rng, H, W, horizon, vanish_x, road_edges)
    things.sort(key=lambda item: item[0])
    for _, group in things:
        objects.extend(group)
    _add_foreground(add, rng, H, W, horizon)
    return objects


def _noise_fields(rng, height: int, width: int) -> dict:
    import cv2

    def smooth(cell):
        grid = rng.normal(0, 1, (max(height // cell, 1) + 2, max(width // cell, 1) + 2)).astype(np.float32)
        return cv2.resize(grid, (width, height), interpolation=cv2.INTER_CUBIC)

    return {"fine": rng.normal(0, 1, (height, width)).astype(np.float32), "blotch": smooth(5),
            "cloud": smooth(max(height // 4, 2))}


def _polygon_json(objects, height: int, width: int) -> dict:
    out = []
    for index, obj in enumerate(objects):
        pts = np.rint(obj.polygon)
        pts[:, 0] = np.clip(pts[:, 0], 0, width - 1)
        pts[:, 1] = np.clip(pts[:, 1], 0, height - 1)
        out.append({"label": obj.label, "polygon": pts.astype(int).tolist(), "deleted": 0, "id": index,
                    "verified": 0, "user": "pdlkit-toy", "date": ""})
    return {"imgHeight": height, "imgWidth": width, "objects": out}


def toy_scene_polygons(seed_sequence, height: int, width: int) -> tuple:
    """(polygons json dict, objects, the scene's generator) of one scene; ``seed_sequence``: anything
    numpy's ``default_rng`` takes.  The generator continues into the painting, so both follow the seed."""
    rng = np.random.default_rng(seed_sequence)
    objects = _scene(rng, height, width)
    return _polygon_json(objects, height, width), objects, rng


def render_toy_image(seed_sequence, height: int, width: int) -> dict:
    """One scene: ``{"polygons", "image" [H, W, 3] uint8 RGB, "label_ids" [H, W] uint8,
    "instance_ids" [H, W] uint16, "color" [H, W, 4] uint8 RGBA}``."""
    from cityscapesscripts.helpers.annotation import Annotation
    from cityscapesscripts.preparation.json2instanceImg import createInstanceImage
    from cityscapesscripts.preparation.json2labelImg import createLabelImage
    from PIL import Image, ImageDraw

    polygons, objects, rng = toy_scene_polygons(seed_sequence, height, width)
    annotation = Annotation()
    annotation.fromJsonText(json.dumps(polygons))
    label_ids = np.asarray(createLabelImage(annotation, "ids"), dtype=np.uint8)
    instance_ids = np.asarray(createInstanceImage(annotation, "ids"), dtype=np.int64)
    color = np.asarray(createLabelImage(annotation, "color"), dtype=np.uint8)

    fields = _noise_fields(rng, height, width)
    canvas = np.zeros((height, width, 3), np.float32)
    for obj, drawn in zip(objects, annotation.objects):
        mask_image = Image.new("L", (width, height), 0)
        ImageDraw.Draw(mask_image).polygon(drawn.polygon, fill=1)  # the rasteriser of the label maps
        ys, xs = np.nonzero(np.asarray(mask_image))
        if ys.size:
            canvas[ys, xs] = obj.paint(rng, ys, xs, obj.box, fields)

    # a darker outline where two instances (or an instance and the background) meet
    thing = instance_ids >= 1000
    edge = np.zeros((height, width), bool)
    diff_y = instance_ids[1:, :] != instance_ids[:-1, :]
    diff_x = instance_ids[:, 1:] != instance_ids[:, :-1]
    edge[1:, :] |= diff_y & (thing[1:, :] | thing[:-1, :])
    edge[:-1, :] |= diff_y & (thing[1:, :] | thing[:-1, :])
    edge[:, 1:] |= diff_x & (thing[:, 1:] | thing[:, :-1])
    edge[:, :-1] |= diff_x & (thing[:, 1:] | thing[:, :-1])
    canvas[edge & thing] *= 0.7

    canvas *= rng.uniform(0.85, 1.15)  # exposure
    canvas += rng.normal(0, 4, canvas.shape).astype(np.float32)
    image = np.clip(np.rint(canvas), 0, 255).astype(np.uint8)
    if instance_ids.max() > np.iinfo(np.uint16).max:  # pragma: no cover - at most ~50 instances a class
        raise RuntimeError("toy instance id does not fit in 16 bits")
    return {"polygons": polygons, "image": image, "label_ids": label_ids,
            "instance_ids": instance_ids.astype(np.uint16), "color": color}


def _toy_file_stems(train: int, val: int) -> list:
    """[(split, city, stem)] of every toy image, stems ``{city}_{seq:06d}_000019``."""
    out = []
    for split, count in (("train", train), ("val", val)):
        cities = TOY_CITIES[split]
        for index in range(count):
            city = cities[index % len(cities)]
            out.append((split, city, f"{city}_{index // len(cities):06d}_{_FRAME:06d}"))
    return out


def generate_toy(out, *, train: int = 40, val: int = 10, height: int = 128, width: int = 256, seed: int = 0,
                 progress: bool = False) -> Path:
    """Write the toy dataset into ``out`` (Cityscapes layout, not yet prepared); returns ``Path(out)``.

    Deterministic: image ``i`` of ``split`` depends only on (seed, split, i, height, width).  A folder
    that already holds a toy set with the same parameters is left as it is; one with other parameters
    or with other Cityscapes data is refused (DataError) rather than mixed.
    """
    for name, value, low in (("train", train, 0), ("val", val, 0), ("height", height, 32), ("width", width, 32)):
        if int(value) != value or value < low:
            raise DataError(f"toy dataset: {name} must be an integer >= {low}, got {value}")
    if train + val == 0:
        raise DataError("toy dataset: train and val are both 0; nothing to generate")
    out = Path(out)
    params = {"train": int(train), "val": int(val), "height": int(height), "width": int(width), "seed": int(seed),
              "generator": TOY_GENERATOR_VERSION}
    marker = out / TOY_MARKER
    if marker.is_file():
        try:
            existing = read_json(marker)
        except DataError:  # a marker cut short: treated as other parameters
            existing = None
        if existing == params:
            return out
        raise DataError(f"{out} already holds a toy dataset made with other parameters ({existing}); "
                        "use an empty folder")
    if out.exists() and any((out / d).exists() for d in ("leftImg8bit", "gtFine")):
        raise DataError(f"{out} already holds leftImg8bit/ or gtFine/ that the toy generator did not write; "
                        "use an empty folder")

    from tqdm import tqdm

    split_code = {"train": 0, "val": 1}
    stems = _toy_file_stems(train, val)
    counters = {"train": 0, "val": 0}
    for split, city, stem in tqdm(stems, desc="toy images", unit="img", disable=not progress):
        index = counters[split]
        counters[split] += 1
        scene = render_toy_image((int(seed), split_code[split], index, int(height), int(width)), height, width)
        image_dir = out / "leftImg8bit" / split / city
        gt_dir = out / "gtFine" / split / city
        write_png(image_dir / f"{stem}_leftImg8bit.png", scene["image"])
        write_png(gt_dir / f"{stem}_gtFine_labelIds.png", scene["label_ids"])
        write_png(gt_dir / f"{stem}_gtFine_instanceIds.png", scene["instance_ids"])
        write_png(gt_dir / f"{stem}_gtFine_color.png", scene["color"])
        write_json(gt_dir / f"{stem}_gtFine_polygons.json", scene["polygons"], indent=4)
    write_json(marker, params, indent=2, sort_keys=True)
    return out
