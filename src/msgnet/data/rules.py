"""Machine-readable rules a dataset obeys (stored in dataset.json under "rule"), and their checker.

A rule is a dict with any of these keys:

``object_count``       ``{"min": m, "max": n}``: how many objects an image holds
``allowed_class_sets`` list of class-id lists: the (sorted) classes of an image's objects must equal one
``region``             ``{"x", "y", "w", "h"}``: every object pixel lies inside this box
``no_overlap``         true: no two object boxes share a pixel
``orbit``              ``{"centre": [x, y], "centre_tolerance": t, "path": [[x, y], ...], "path_tolerance": t}``:
                       one object's box centre lies within ``centre_tolerance`` pixels of ``centre`` and
                       every other object's within ``path_tolerance`` of the closed polyline ``path``
                       (CLEVR-192: an object in the centre and one orbiting it, the orbit as the camera sees it)

The same checker serves the builders' own tests, ``msgnet eval coherency`` and the
acceptance figures for sampled layouts, so there is one definition of "obeys the rule".
"""

from __future__ import annotations

from typing import Any, Sequence

import numpy as np

from msgnet.data.format import ObjectAnnotation
from msgnet.errors import DataError
from msgnet.layouts.boxes import boxes_overlap, layout_to_objects

RULE_KEYS = ("object_count", "allowed_class_sets", "region", "no_overlap", "orbit")


def validate_rule(rule: Any, where: str) -> dict[str, Any] | None:
    """Check the rule's shape; raise DataError naming ``where`` on nonsense."""
    if rule is None:
        return None
    if not isinstance(rule, dict):
        raise DataError(f"{where}: \"rule\" must be an object")
    unknown = set(rule) - set(RULE_KEYS) - {"description"}
    if unknown:
        raise DataError(f"{where}: unknown rule key {sorted(unknown)[0]!r} (known: {', '.join(RULE_KEYS)})")
    try:
        if "object_count" in rule:
            int(rule["object_count"]["min"]), int(rule["object_count"]["max"])
        if "allowed_class_sets" in rule:
            [[int(c) for c in s] for s in rule["allowed_class_sets"]]
        if "region" in rule:
            [int(rule["region"][k]) for k in ("x", "y", "w", "h")]
        if "orbit" in rule:
            o = rule["orbit"]
            [float(v) for v in o["centre"]], float(o["centre_tolerance"]), float(o["path_tolerance"])
            if len(o["path"]) < 3 or any(len(p) != 2 for p in o["path"]):
                raise ValueError
            [[float(v) for v in p] for p in o["path"]]
    except (KeyError, TypeError, ValueError):
        raise DataError(f"{where}: malformed rule") from None
    return rule


def rule_violations(
    rule: dict[str, Any] | None,
    objects: Sequence[ObjectAnnotation],
    layout: np.ndarray | None = None,
) -> list[str]:
    """Names of the rule's parts that this image breaks (empty: it obeys).

    ``objects`` are the image's annotations (for a generated image: the connected
    components of its layout). ``layout`` is used for the region test when given, so an
    object that leaks outside the region by a single pixel is caught.
    """
    if not rule:
        return []
    broken: list[str] = []
    if "object_count" in rule:
        lo, hi = int(rule["object_count"]["min"]), int(rule["object_count"]["max"])
        if not lo <= len(objects) <= hi:
            broken.append("object_count")
    if "allowed_class_sets" in rule:
        allowed = {tuple(sorted(int(c) for c in s)) for s in rule["allowed_class_sets"]}
        if tuple(sorted(o.category_id for o in objects)) not in allowed:
            broken.append("allowed_class_sets")
    if "region" in rule:
        r = rule["region"]
        x0, y0, x1, y1 = int(r["x"]), int(r["y"]), int(r["x"]) + int(r["w"]), int(r["y"]) + int(r["h"])
        if layout is not None:
            inside = np.zeros(layout.shape, dtype=bool)
            inside[max(y0, 0) : max(y1, 0), max(x0, 0) : max(x1, 0)] = True
            outside_objects = bool(((layout > 0) & ~inside).any())
        else:
            outside_objects = any(
                o.bbox[0] < x0 or o.bbox[1] < y0 or o.bbox[0] + o.bbox[2] > x1 or o.bbox[1] + o.bbox[3] > y1
                for o in objects
            )
        if outside_objects:
            broken.append("region")
    if rule.get("no_overlap"):
        if any(boxes_overlap(a.bbox, b.bbox) for i, a in enumerate(objects) for b in objects[i + 1 :]):
            broken.append("no_overlap")
    if "orbit" in rule and not _on_orbit(rule["orbit"], objects):
        broken.append("orbit")
    return broken


def layout_keeps_rule(rule: dict[str, Any] | None, layout: np.ndarray) -> bool:
    """Whether the class map ``layout`` (image size) holds objects and keeps ``rule`` (None: any layout
    with objects does). Its objects are the layout's connected components, as a generated pair's are."""
    objects = layout_to_objects(layout)
    return bool(objects) and not rule_violations(rule, objects, layout)


def _distance_to_polyline(point: np.ndarray, path: np.ndarray) -> float:
    """Distance from ``point`` (2,) to the closed polyline through ``path`` (M, 2)."""
    a, b = path, np.roll(path, -1, axis=0)
    ab = b - a
    t = np.clip(((point - a) * ab).sum(1) / np.maximum((ab * ab).sum(1), 1e-12), 0.0, 1.0)
    return float(np.min(np.linalg.norm(a + t[:, None] * ab - point, axis=1)))


def _on_orbit(orbit: dict[str, Any], objects: Sequence[ObjectAnnotation]) -> bool:
    """One object at the centre, every other one on the orbit (by box centres)."""
    centres = [np.array([o.bbox[0] + o.bbox[2] / 2, o.bbox[1] + o.bbox[3] / 2], dtype=float) for o in objects]
    centre = np.asarray(orbit["centre"], dtype=float)
    path = np.asarray(orbit["path"], dtype=float)
    for k, c in enumerate(centres):
        if np.linalg.norm(c - centre) <= float(orbit["centre_tolerance"]):
            others = centres[:k] + centres[k + 1:]
            if all(_distance_to_polyline(o, path) <= float(orbit["path_tolerance"]) for o in others):
                return True
    return False
