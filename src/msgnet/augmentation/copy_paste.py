"""Copy-paste of annotated objects (Ghiasi et al., CVPR 2021, "simple copy-paste"), the baseline
a generator of image + annotation pairs has to beat.

An object is a connected component of one class in a real training layout. A copy-paste
image takes a real training image and pastes a random non-empty subset of the objects of
another real training image into it, each at a random position where it lies wholly inside
the image and covers no object already there. The object's pixels (its layout component,
image and class together) replace what was below; nothing else changes, so the layout stays
exactly the annotation of the new image. Only the images it is given are used: a copy-paste
set built from the U-Net's N real images adds no real data.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
from scipy import ndimage


@dataclass(frozen=True)
class CutObject:
    """One object of a real image: its class, its box in the source, and its pixel mask within the box."""

    source: int  # index of the source image
    class_id: int
    y0: int
    x0: int
    mask: np.ndarray  # (h, w) bool


def cut_objects(layouts: np.ndarray) -> list[list[CutObject]]:
    """Per image, its objects: connected components (8-connected) of each class of its layout."""
    structure = np.ones((3, 3), dtype=bool)
    out: list[list[CutObject]] = []
    for i, lay in enumerate(layouts):
        objs: list[CutObject] = []
        for c in np.unique(lay):
            if c == 0:
                continue
            labels, _ = ndimage.label(lay == c, structure=structure)
            for k, sl in enumerate(ndimage.find_objects(labels), start=1):
                if sl is None:
                    continue
                objs.append(CutObject(i, int(c), sl[0].start, sl[1].start, labels[sl] == k))
        out.append(objs)
    return out


def paste_object(image: np.ndarray | None, layout: np.ndarray, obj: CutObject, src_image: np.ndarray | None,
                 rng: np.random.Generator, tries: int = 20) -> np.ndarray | None:
    """Paste ``obj`` (cut from ``src_image``) in place at a random free position.

    Returns the (H, W) bool mask of the pasted pixels, or None when no free position was found
    in ``tries`` draws (the image is then unchanged). With ``image`` None only the layout changes
    (layouts made before their images: :mod:`msgnet.sampling.real_layouts`).
    """
    h, w = obj.mask.shape
    height, width = layout.shape
    if h > height or w > width:
        return None
    for _ in range(tries):
        y = int(rng.integers(0, height - h + 1))
        x = int(rng.integers(0, width - w + 1))
        below = layout[y : y + h, x : x + w]
        if (below[obj.mask] != 0).any():  # would cover an object: not a valid position
            continue
        if image is not None and src_image is not None:
            src_pixels = src_image[obj.y0 : obj.y0 + h, obj.x0 : obj.x0 + w]
            image[y : y + h, x : x + w][obj.mask] = src_pixels[obj.mask]
        below[obj.mask] = obj.class_id
        pasted = np.zeros(layout.shape, dtype=bool)
        pasted[y : y + h, x : x + w] = obj.mask
        return pasted
    return None


def copy_paste_set(images: np.ndarray, layouts: np.ndarray, num: int, seed: int,
                   objects: list[list[CutObject]] | None = None) -> tuple[np.ndarray, np.ndarray]:
    """``num`` copy-paste images (N, H, W, C) uint8 and their layouts (N, H, W) from the given real set."""
    if len(images) == 0:
        raise ValueError("copy-paste needs at least one real image")
    objects = cut_objects(layouts) if objects is None else objects
    donors = [i for i, objs in enumerate(objects) if objs]
    rng = np.random.default_rng(seed)
    out_images = np.empty((num,) + images.shape[1:], dtype=images.dtype)
    out_layouts = np.empty((num,) + layouts.shape[1:], dtype=layouts.dtype)
    for k in range(num):
        base = int(rng.integers(len(images)))
        image, layout = images[base].copy(), layouts[base].copy()
        if donors:
            donor = donors[int(rng.integers(len(donors)))]
            if len(donors) > 1:
                while donor == base:  # another image's objects, as in simple copy-paste
                    donor = donors[int(rng.integers(len(donors)))]
            objs = objects[donor]
            count = int(rng.integers(1, len(objs) + 1))
            for j in rng.permutation(len(objs))[:count]:
                paste_object(image, layout, objs[int(j)], images[donor], rng)
        out_images[k], out_layouts[k] = image, layout
    return out_images, out_layouts


DESCRIPTION = ("a real training image plus a random non-empty subset of the objects (layout "
               "components) of another real training image, each pasted at a random position inside the image "
               "that covers no object; layout updated with the pasted pixels")
