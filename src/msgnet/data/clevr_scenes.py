"""CLEVR-like scenes as plain data: what to render, drawn from a seed (no Blender here).

The vocabulary follows CLEVR (Johnson et al. 2017): 3 shapes x 8 colours (the layout classes,
24 plus the background), 2 materials (rubber, metal) and 2 sizes as nuisance factors, on a grey
ground plane under three-point lighting, seen by one fixed camera. Two variants, after the
MSGNet paper:

* ``clevr-64``: 2-4 objects anywhere on the ground, no two closer than their radii plus a margin;
* ``clevr-192``: one large object in the centre and one large object orbiting it at a fixed
  radius (random angle), over a reflective ground (the paper's spatial-coherency set).

A :class:`Scene` is a pure function of ``(seed, index)``, so a build renders the same scenes
however it is split among workers or resumed. :mod:`msgnet.data.clevr_render` turns scenes into
pixels inside Blender; :mod:`msgnet.data.clevr` drives it and writes the dataset.
"""

from __future__ import annotations

import math
from dataclasses import asdict, dataclass

import numpy as np

from msgnet.data.checks import check_count, check_seed, check_split_fractions
from msgnet.data.format import ClassInfo
from msgnet.data.schema import MAX_IMAGES
from msgnet.errors import UsageError

SHAPES = ("cube", "sphere", "cylinder")
# CLEVR's colours (properties.json), sRGB 0-255.
COLOURS = {"gray": (87, 87, 87), "red": (173, 35, 35), "blue": (42, 75, 215), "green": (29, 105, 20),
           "brown": (129, 74, 25), "purple": (129, 38, 192), "cyan": (41, 208, 208), "yellow": (255, 238, 51)}
MATERIALS = ("rubber", "metal")
SIZES = {"small": 0.35, "large": 0.7}  # CLEVR's object radii in scene units
VARIANTS = {"clevr-64": 64, "clevr-192": 192}
GROUND_EXTENT = 2.7  # objects of clevr-64 stand in [-2.7, 2.7]^2: inside the 64 x 64 view
MARGIN = 0.25  # free ground between two objects of clevr-64
ORBIT_RADIUS = 2.4  # distance of the orbiting object of clevr-192 from the centre object


def class_id(shape: str, colour: str) -> int:
    """Layout class of an object: 1 + shape x 8 + colour (0 is the background)."""
    return 1 + SHAPES.index(shape) * len(COLOURS) + list(COLOURS).index(colour)


def class_infos() -> list[ClassInfo]:
    out = [ClassInfo(0, "background", (0, 0, 0))]
    for shape in SHAPES:
        for colour, rgb in COLOURS.items():
            out.append(ClassInfo(class_id(shape, colour), f"{colour} {shape}", rgb))
    return out


@dataclass(frozen=True)
class SceneObject:
    shape: str
    colour: str
    material: str
    size: str
    x: float
    y: float
    rotation: float  # degrees about the vertical axis

    @property
    def radius(self) -> float:
        return SIZES[self.size]

    @property
    def class_id(self) -> int:
        return class_id(self.shape, self.colour)


@dataclass(frozen=True)
class Scene:
    index: int
    variant: str
    image_size: int
    objects: tuple[SceneObject, ...]
    reflective_ground: bool = False
    render_seed: int = 0  # Cycles' sampling seed: the same scene renders the same pixels

    def to_json(self) -> dict:
        return {**asdict(self), "objects": [asdict(o) for o in self.objects]}


@dataclass(frozen=True)
class ClevrSpec:
    """What ``msgnet data build clevr`` makes; every value is checked when the spec is made, naming its
    field. The defaults are the command's (it reads them here)."""

    variant: str = "clevr-64"
    num: int = 1000
    seed: int = 0
    val_fraction: float = 0.1
    test_fraction: float = 0.0
    samples: int = 16  # Cycles samples per pixel of the image pass
    # A scene in which some object shows fewer pixels than this share of the image is drawn again
    # (as CLEVR does): an object hidden behind others would otherwise vanish from the annotation
    # and leave a scene that breaks the object-count rule.
    min_visible_fraction: float = 0.002

    def __post_init__(self) -> None:
        self.validate()

    def validate(self) -> None:
        if self.variant not in VARIANTS:
            raise UsageError(f"variant: one of {', '.join(VARIANTS)} (got {self.variant!r})")
        check_count("num", self.num)
        check_seed("seed", self.seed)
        check_count("samples", self.samples)
        if self.num > MAX_IMAGES:
            raise UsageError(f"num: at most {MAX_IMAGES:,} scenes in one build, got {self.num:,}")
        if self.num < 3:
            raise UsageError(f"num: need at least 3 scenes (one per split), got {self.num}")
        check_split_fractions(self.val_fraction, self.test_fraction)
        value = self.min_visible_fraction
        if not (isinstance(value, (int, float)) and not isinstance(value, bool) and 0 <= value < 0.05):
            raise UsageError(f"min_visible_fraction: a share of the image in [0, 0.05), got {value!r}")

    @property
    def min_visible_pixels(self) -> int:
        return math.ceil(self.min_visible_fraction * self.image_size**2)

    @property
    def image_size(self) -> int:
        return VARIANTS[self.variant]

    def split_sizes(self) -> dict[str, int]:
        num_val = max(1, int(round(self.num * self.val_fraction)))
        num_test = max(1, int(round(self.num * self.test_fraction))) if self.test_fraction > 0 else 0
        return {"train": self.num - num_val - num_test, "val": num_val, "test": num_test}


def _random_object(rng: np.random.Generator, x: float, y: float, size: str | None = None) -> SceneObject:
    return SceneObject(shape=SHAPES[rng.integers(len(SHAPES))], colour=list(COLOURS)[rng.integers(len(COLOURS))],
                       material=MATERIALS[rng.integers(len(MATERIALS))],
                       size=size or list(SIZES)[rng.integers(len(SIZES))],
                       x=round(x, 4), y=round(y, 4), rotation=round(float(rng.uniform(0, 360)), 2))


def sample_scene(spec: ClevrSpec, index: int, attempt: int = 0) -> Scene:
    """Scene ``index`` of the build: a pure function of (spec.seed, index, attempt).

    ``attempt`` counts redraws of a scene whose render hid an object (first draw: 0).
    """
    rng = np.random.default_rng([spec.seed, index] if attempt == 0 else [spec.seed, index, attempt])
    if spec.variant == "clevr-192":
        angle = float(rng.uniform(0, 2 * math.pi))
        centre = _random_object(rng, 0.0, 0.0, "large")
        orbit = _random_object(rng, ORBIT_RADIUS * math.cos(angle), ORBIT_RADIUS * math.sin(angle), "large")
        objects: list[SceneObject] = [centre, orbit]
    else:
        count = int(rng.integers(2, 5))
        objects = []
        while len(objects) < count:  # rejection sampling: a free place always exists for 4 objects
            size = list(SIZES)[rng.integers(len(SIZES))]
            x, y = (float(v) for v in rng.uniform(-GROUND_EXTENT, GROUND_EXTENT, 2))
            if all(math.hypot(x - o.x, y - o.y) >= SIZES[size] + o.radius + MARGIN for o in objects):
                objects.append(_random_object(rng, x, y, size))
    return Scene(index=index, variant=spec.variant, image_size=spec.image_size, objects=tuple(objects),
                 reflective_ground=spec.variant == "clevr-192", render_seed=int(rng.integers(2**31)))


def orbit_points(num: int = 72) -> list[tuple[float, float, float]]:
    """3-D points of the orbit of clevr-192 at the height of a large object's centre."""
    r = SIZES["large"]
    return [(ORBIT_RADIUS * math.cos(2 * math.pi * k / num), ORBIT_RADIUS * math.sin(2 * math.pi * k / num), r)
            for k in range(num)]
