"""Layouts made from real ones (mask-first): they keep the dataset's rule and say how they were made."""

from __future__ import annotations

import json

import numpy as np
import pytest

from msgnet.cli import main
from msgnet.data.format import ObjectAnnotation, open_dataset
from msgnet.data.rules import rule_violations
from msgnet.layouts import boxes_to_layout, layout_to_objects
from msgnet.sampling.real_layouts import RealLayoutMaker

RULE = {"object_count": {"min": 3, "max": 3}, "no_overlap": True}


def _rngs(num: int, seed: int) -> list[np.random.Generator]:
    """One rng per layout, as the engine gives each pair its own stream."""
    return [np.random.default_rng([seed, k]) for k in range(num)]


def _real_layouts(num: int = 30, size: int = 32, seed: int = 0) -> np.ndarray:
    """Layouts of exactly three non-overlapping boxes, as a Multi-MNIST-like rule demands."""
    rng = np.random.default_rng(seed)
    out = []
    while len(out) < num:
        objs = [ObjectAnnotation(int(rng.integers(1, 4)), (int(rng.integers(0, 24)), int(rng.integers(0, 24)), 6, 6))
                for _ in range(3)]
        lay = boxes_to_layout(objs, (size, size))
        if not rule_violations(RULE, layout_to_objects(lay), lay) and len(layout_to_objects(lay)) == 3:
            out.append(lay)
    return np.stack(out).astype(np.uint8)


def test_made_layouts_keep_the_rule_and_record_their_recipe():
    real = _real_layouts()
    maker = RealLayoutMaker(real, list(range(100, 130)), RULE, ("affine",))
    made, provenance = maker.make(_rngs(120, 5))
    assert made.shape == (120, 32, 32) and len(provenance) == 120
    for lay in made:
        objects = layout_to_objects(lay)
        assert len(objects) == 3 and not rule_violations(RULE, objects, lay)
    recipes = {p["recipe"] for p in provenance}
    assert {"transform", "recombine"} <= recipes
    for p, lay in zip(provenance, made):
        assert 100 <= p["from"] < 130
        if p["recipe"] == "recombine":
            assert p["kept_objects"] + p["added_objects"] == 3 and 100 <= p["objects_from"] < 130
    # New layouts, not copies: most differ from every real one.
    copies = sum(any(np.array_equal(lay, r) for r in real) for lay in made)
    assert copies < 30
    # A pure function of the rngs: each layout of its own (the first ten alone are the same ten).
    again, again_prov = maker.make(_rngs(120, 5))
    assert np.array_equal(made, again) and again_prov == provenance
    assert np.array_equal(maker.make(_rngs(10, 5))[0], made[:10])
    other, _ = maker.make(_rngs(120, 6))
    assert not np.array_equal(made, other)


def test_without_a_rule_or_transforms_objects_are_recombined():
    real = _real_layouts(num=10)
    maker = RealLayoutMaker(real, list(range(10)), None, ())
    made, provenance = maker.make(_rngs(40, 0))
    assert all(p["recipe"] == "recombine" for p in provenance)
    assert all(len(layout_to_objects(lay)) >= 1 for lay in made)
    # A recombined layout holds only classes of real objects, each placed on background.
    assert set(np.unique(made)) <= set(np.unique(real))


def test_a_rule_the_recipes_cannot_keep_falls_back_to_real_layouts():
    real = _real_layouts(num=5)
    impossible = {"object_count": {"min": 3, "max": 3}, "region": {"x": 0, "y": 0, "w": 32, "h": 32},
                  "allowed_class_sets": [sorted(int(o.category_id) for o in layout_to_objects(real[0]))]}
    maker = RealLayoutMaker(real, list(range(5)), impossible, ("affine",))
    made, provenance = maker.make(_rngs(10, 1))
    for lay, p in zip(made, provenance):
        assert not rule_violations(impossible, layout_to_objects(lay), lay) or p["recipe"] == "real"


@pytest.fixture(scope="module")
def tiny_run(tmp_path_factory):
    from tests.fixtures import make_tiny_dataset

    root = tmp_path_factory.mktemp("real-layouts")
    data = make_tiny_dataset(root / "data", n=24, size=16, augmentations=["flip"])
    run = root / "run"
    assert main(["train", "all", "--config", "tiny", "--data", str(data), "--run", str(run), "--steps", "3",
                 "--device", "cpu"]) == 0
    return data, run


def test_sampling_with_layouts_made_from_real_ones_records_them(tiny_run, tmp_path):
    data, run = tiny_run
    out = tmp_path / "gen"
    assert main(["sample", "--run", str(run), "--num", "6", "--batch-size", "4", "--layout-source", "real",
                 "--device", "cpu", "--out", str(out)]) == 0
    meta = json.loads((out / "dataset.json").read_text())["source"]
    assert "made from" in meta["mode"] and sorted(meta["layout_provenance"], key=int) == [str(i) for i in range(6)]
    train_ids = set(open_dataset(data).ids("train"))
    assert all(p["from"] in train_ids for p in meta["layout_provenance"].values())
    # The layouts written are the maker's, each from its pair's own stream of the seed.
    from msgnet.sampling.engine import STREAM_REAL_LAYOUT, Engine, pair_seed

    maker = Engine.load(run, need_layout_prior=False, device="cpu").real_layout_maker()
    expected, _ = maker.make([np.random.default_rng(pair_seed(0, i, STREAM_REAL_LAYOUT)) for i in range(6)])
    _, layouts = open_dataset(out).load_split("train")
    assert np.array_equal(layouts, expected)


def test_layout_source_is_checked(tiny_run, tmp_path, capsys):
    _, run = tiny_run
    code = main(["sample", "--run", str(run), "--num", "2", "--layout-source", "real", "--layouts", str(run),
                 "--out", str(tmp_path / "x")])
    assert code == 2 and "--layout-source" in capsys.readouterr().err
    assert not (tmp_path / "x").exists() and not (tmp_path / "x.partial").exists()


def _objects_of(layout: np.ndarray) -> list[tuple[int, np.ndarray, tuple[int, int]]]:
    """(class, mask within its box, box centre) of each object of ``layout``."""
    from msgnet.augmentation.copy_paste import cut_objects

    return [(o.class_id, o.mask, (o.y0 + o.mask.shape[0] / 2, o.x0 + o.mask.shape[1] / 2))
            for o in cut_objects(layout[None])[0]]


def test_reshaped_objects_are_real_objects_of_their_class_where_the_drawn_ones_were():
    """"prior-shapes": each drawn object becomes one of the real objects of its class nearest in size, centred on
    the drawn object's box; the real images its shapes came from are recorded; the rng alone decides."""
    real = np.zeros((4, 32, 32), dtype=np.uint8)
    real[0, 2:9, 3:7] = 1  # a tall thin class-1 object
    real[1, 10:13, 4:14] = 1  # a wide flat class-1 object
    real[2, 5:11, 5:11] = 2
    real[2, 7:9, 7:9] = 0  # a class-2 ring
    real[3, 20:30, 20:25] = 3
    maker = RealLayoutMaker(real, [10, 11, 12, 13], None, ())
    drawn = np.zeros((32, 32), dtype=np.uint8)
    drawn[16:24, 0:4] = 1  # tall: the tall real object is nearer in size than the wide one
    drawn[0:8, 20:28] = 2
    made, record = maker.reshape(drawn, np.random.default_rng(0))
    got = sorted(_objects_of(made), key=lambda o: o[0])
    assert [c for c, _, _ in got] == [1, 2]
    assert np.array_equal(got[0][1], real[0, 2:9, 3:7] == 1) and np.array_equal(got[1][1], real[2, 5:11, 5:11] == 2)
    assert got[0][2] == pytest.approx((20.0, 2.0), abs=1.0) and got[1][2] == pytest.approx((4.0, 24.0), abs=1.0)
    assert record == {"recipe": "prior-shapes", "shapes_from": [10, 12]}
    again, _ = maker.reshape(drawn, np.random.default_rng(0))
    assert np.array_equal(again, made)


def test_a_drawn_object_without_a_real_shape_or_room_is_left_out():
    real = np.zeros((1, 16, 16), dtype=np.uint8)
    real[0, 0:10, 0:10] = 1
    maker = RealLayoutMaker(real, [0], None, ())
    drawn = np.zeros((16, 16), dtype=np.uint8)
    drawn[0:4, 0:4] = 2  # no real object of class 2
    drawn[4:8, 4:8] = 1
    drawn[10:12, 10:12] = 1  # a second class-1 object: the only real shape would cover the first
    made, record = maker.reshape(drawn, np.random.default_rng(1))
    assert set(np.unique(made)) == {0, 1} and len(_objects_of(made)) == 1
    assert record["shapes_from"] == [0]


def test_sampling_with_real_shapes_keeps_the_rule_and_is_the_same_at_any_batch_size(tiny_run):
    import msgnet
    from msgnet.data.rules import layout_keeps_rule

    _, run = tiny_run
    generator = msgnet.MSGNet.from_pretrained(run, device="cpu")
    pairs = {bs: generator.sample(6, seed=2, layout_source="prior-shapes", batch_size=bs, progress=False)
             for bs in (1, 4)}
    assert np.array_equal(pairs[1].images, pairs[4].images) and np.array_equal(pairs[1].layouts, pairs[4].layouts)
    drawn = generator.sample(6, seed=2, layout_source="prior", progress=False)
    assert not np.array_equal(drawn.layouts, pairs[1].layouts)
    real_masks = {(o.class_id, o.mask.tobytes(), o.mask.shape)
                  for o in generator.engine.real_layout_maker().shapes.get(1, [])}
    for layout in pairs[1].layouts:
        assert layout_keeps_rule(generator.info.rule, layout)
        assert all((c, m.tobytes(), m.shape) in real_masks for c, m, _ in _objects_of(layout) if c == 1)
    record = pairs[1].source
    assert "shaped as the run's training objects" in record["mode"]
    assert [p["recipe"] for p in record["layout_provenance"].values()] == ["prior-shapes"] * 6


def test_training_layouts_round_trip_and_a_damaged_file_is_refused_naming_it(tmp_path):
    from msgnet.errors import UsageError
    from msgnet.sampling.real_layouts import read_training_layouts, write_training_layouts

    maker = RealLayoutMaker(_real_layouts(5), [7, 8, 9, 10, 11], RULE, ())
    path = tmp_path / "training_layouts.safetensors"
    write_training_layouts(path, maker)
    layouts, ids = read_training_layouts(path)
    assert np.array_equal(layouts, maker.layouts) and layouts.dtype == np.uint8 and ids == [7, 8, 9, 10, 11]
    path.write_bytes(b"not a safetensors file")
    with pytest.raises(UsageError, match="training_layouts.safetensors: unreadable"):
        read_training_layouts(path)
