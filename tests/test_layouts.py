import numpy as np
import pytest
import torch
from hypothesis import given, settings
from hypothesis import strategies as st

from msgnet.data.format import ObjectAnnotation
from msgnet.layouts import (boxes_to_layout, downsample_layout, layout_to_objects, overlay, pairs_grid,
                            upsample_layout)
from msgnet.layouts.render import default_palette

boxes = st.lists(
    st.tuples(st.integers(1, 9), st.integers(0, 30), st.integers(0, 30), st.integers(1, 12), st.integers(1, 12)),
    min_size=0, max_size=5,
)


def test_later_boxes_drawn_over_earlier():
    lay = boxes_to_layout([(1, (0, 0, 4, 4)), (2, (2, 2, 4, 4))], (8, 8))
    assert lay[1, 1] == 1 and lay[3, 3] == 2 and lay[5, 5] == 2 and lay[7, 7] == 0


@settings(max_examples=60, deadline=None)
@given(boxes)
def test_separated_boxes_round_trip_through_components(spec):
    # Boxes that neither touch nor overlap come back exactly from the layout's components.
    objs = []
    for cid, x, y, w, h in spec:
        box = (x, y, min(w, 32 - x), min(h, 32 - y))
        grown = (box[0] - 1, box[1] - 1, box[2] + 2, box[3] + 2)
        from msgnet.layouts import boxes_overlap
        if all(not boxes_overlap(grown, o.bbox) for o in objs):
            objs.append(ObjectAnnotation(cid, box))
    lay = boxes_to_layout(objs, (32, 32))
    back = layout_to_objects(lay)
    key = lambda o: (o.category_id, o.bbox)  # noqa: E731
    assert sorted(back, key=key) == sorted(objs, key=key)


@settings(max_examples=60, deadline=None)
@given(st.integers(1, 4).flatmap(lambda f: st.tuples(st.just(f), st.lists(st.integers(0, 5), min_size=16, max_size=16))))
def test_upsample_then_downsample_is_identity(args):
    factor, values = args
    small = np.array(values, dtype=np.uint8).reshape(4, 4)
    big = upsample_layout(small, 4 * 2**factor)
    assert big.shape == (4 * 2**factor,) * 2
    np.testing.assert_array_equal(downsample_layout(big, 4, num_classes=6), small)


def test_downsample_keeps_half_covered_small_objects():
    lay = np.zeros((8, 8), dtype=np.uint8)
    lay[0:2, 0:1] = 3  # half of the top-left 2x2 cell
    lay[4:5, 4:5] = 2  # a quarter of a cell: loses to background
    small = downsample_layout(lay, 4)
    assert small[0, 0] == 3 and small[2, 2] == 0


def test_downsample_torch_batch_matches_numpy():
    rng = np.random.default_rng(0)
    lay = rng.integers(0, 4, size=(3, 16, 16)).astype(np.uint8)
    t = downsample_layout(torch.from_numpy(lay), 4, num_classes=4)
    assert t.dtype == torch.int64 and t.shape == (3, 4, 4)
    for i in range(3):
        np.testing.assert_array_equal(t[i].numpy(), downsample_layout(lay[i], 4, num_classes=4))


def test_overlay_and_grid_shapes():
    pal = default_palette(4)
    img = np.full((8, 8, 1), 100, dtype=np.uint8)
    lay = np.zeros((8, 8), dtype=np.uint8)
    lay[2:4, 2:4] = 1
    ov = overlay(img, lay, pal)
    assert ov.shape == (8, 8, 3)
    assert (ov[0, 0] == 100).all() and not (ov[2, 2] == 100).all()
    g = pairs_grid([img] * 3, [lay] * 3, pal, columns=4)
    assert g.ndim == 3 and g.shape[2] == 3


@pytest.mark.parametrize("channels", [1, 2, 3])
def test_overlay_accepts_any_channel_count(channels):
    img = np.zeros((4, 4, channels), dtype=np.uint8)
    assert overlay(img, np.ones((4, 4), dtype=np.uint8), default_palette(2)).shape == (4, 4, 3)
