"""CLEVR scenes: the scene sampler and rule checker always; rendering only where bpy is installed."""

import json
import os
import subprocess
from dataclasses import asdict, replace
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from msgnet.cli import main
from msgnet.data.clevr_scenes import ORBIT_RADIUS, SHAPES, ClevrSpec, Scene, class_id, sample_scene
from msgnet.data.format import ObjectAnnotation
from msgnet.data.rules import rule_violations


def _bpy_python() -> Path | None:
    from msgnet.data.clevr import renderer_python
    from msgnet.errors import UsageError

    try:
        return renderer_python()
    except UsageError:
        return None


needs_bpy = pytest.mark.skipif(_bpy_python() is None, reason="bpy is not installed (`msgnet data setup-clevr`, or "
                               "$MSGNET_BPY_PYTHON): the CLEVR renderer cannot run here")


def test_scenes_are_a_pure_function_of_seed_and_index_and_keep_their_variant():
    spec = ClevrSpec(variant="clevr-64", num=50, seed=3)
    assert sample_scene(spec, 7) == sample_scene(spec, 7) and sample_scene(spec, 7) != sample_scene(spec, 8)
    for i in range(50):
        objs = sample_scene(spec, i).objects
        assert 2 <= len(objs) <= 4
        for a in range(len(objs)):
            for b in range(a + 1, len(objs)):
                gap = np.hypot(objs[a].x - objs[b].x, objs[a].y - objs[b].y)
                assert gap >= objs[a].radius + objs[b].radius  # objects never intersect
    orbit = ClevrSpec(variant="clevr-192", num=20)
    for i in range(20):
        centre, moon = sample_scene(orbit, i).objects
        assert (centre.x, centre.y) == (0.0, 0.0)
        assert np.hypot(moon.x, moon.y) == pytest.approx(ORBIT_RADIUS, abs=1e-3)
    assert class_id(SHAPES[-1], "yellow") == 24


def test_the_orbit_rule_rejects_a_hand_made_breaking_layout():
    rule = {"object_count": {"min": 2, "max": 2},
            "orbit": {"centre": [96, 80], "centre_tolerance": 8, "path_tolerance": 8,
                      "path": [[96 + 60 * np.cos(t), 80 + 25 * np.sin(t)] for t in np.linspace(0, 2 * np.pi, 72)]}}

    def box(cx, cy, c=2):
        return ObjectAnnotation(c, (cx - 5, cy - 5, 10, 10))

    assert rule_violations(rule, [box(96, 80), box(156, 80)]) == []  # centre + on the orbit
    assert rule_violations(rule, [box(156, 80), box(97, 82)]) == []  # either order
    assert rule_violations(rule, [box(96, 80), box(126, 80)]) == ["orbit"]  # half the radius
    assert rule_violations(rule, [box(40, 30), box(156, 80)]) == ["orbit"]  # nothing in the centre
    assert rule_violations(rule, [box(96, 80)]) == ["object_count"]


def test_without_bpy_the_build_says_how_to_install_it(tmp_path, capsys, monkeypatch):
    monkeypatch.setenv("MSGNET_BPY_PYTHON", str(tmp_path / "no-such-python"))
    assert main(["data", "build", "clevr", "--num", "4", "--out", str(tmp_path / "c")]) == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and "setup-clevr" in err[0]
    assert not (tmp_path / "c").exists() and not (tmp_path / "c.partial").exists()


def _render(scenes: list[Scene], out: Path) -> None:
    from msgnet.data.clevr import RENDER_SCRIPT

    out.mkdir(parents=True, exist_ok=True)
    jobs = out / "jobs.json"
    jobs.write_text(json.dumps({"samples": 8, "image_size": scenes[0].image_size,
                                "scenes": [s.to_json() for s in scenes]}))
    subprocess.run([str(_bpy_python()), str(RENDER_SCRIPT), str(jobs), str(out)], check=True,
                   capture_output=True)


@needs_bpy
def test_render_four_scenes_masks_agree_with_the_image_and_resume(tmp_path):
    from msgnet.data.format import open_dataset

    out = tmp_path / "c64"
    assert main(["data", "build", "clevr", "--num", "4", "--out", str(out), "--workers", "2", "--seed", "1",
                 "--samples", "8"]) == 0
    ds = open_dataset(out)
    assert ds.info.image_size == (64, 64) and ds.info.channels == 3 and ds.info.num_classes == 25
    spec = ClevrSpec(variant="clevr-64", num=4, seed=1, samples=8)
    redraws = {int(k): v for k, v in ds.info.source["redraws"].items()}
    scenes = [sample_scene(spec, i, redraws.get(i, 0)) for i in range(4)]
    # The same scenes without their objects: what every object's pixels must differ from.
    empty = [replace(s, objects=()) for s in scenes]
    _render(empty, tmp_path / "empty")
    anns = ds.annotations()
    for iid, scene in zip(sorted(anns), scenes):
        image = ds.read_image(iid).astype(float)
        layout = ds.read_layout(iid)
        bare = np.asarray(Image.open(tmp_path / "empty" / f"{scene.index:07d}.png").convert("RGB")).astype(float)
        diff = np.abs(image - bare).sum(-1)
        noise = np.median(diff[layout == 0])
        for o in anns[iid]:
            x, y, w, h = o.bbox
            inside = layout[y:y + h, x:x + w] == o.category_id
            assert diff[y:y + h, x:x + w][inside].mean() > 3 * noise + 10, (iid, o)
        assert sorted(o.category_id for o in anns[iid]) == sorted(
            ob.class_id for ob in scene.objects if (layout == ob.class_id).any())
    # Resume: a build stopped after two scenes renders only the other two.
    partial = tmp_path / "r.partial" / "render"
    _render(scenes[:2], partial)
    (tmp_path / "r.partial" / "spec.json").write_text(json.dumps({"spec": asdict(spec)}))
    (tmp_path / "r.partial" / "attempts.json").write_text(json.dumps(redraws))  # as the stopped build left it
    assert main(["data", "build", "clevr", "--num", "4", "--out", str(tmp_path / "r"), "--seed", "1",
                 "--samples", "8", "--resume"]) == 0
    again = open_dataset(tmp_path / "r")
    assert again.info.source["rendered_now"] == 2
    for iid in sorted(anns):
        assert np.array_equal(again.read_layout(iid), ds.read_layout(iid))
    assert not partial.parent.exists()  # assembled and cleaned up


@needs_bpy
def test_every_rendered_clevr_192_scene_obeys_its_rule(tmp_path, capsys):
    out = tmp_path / "c192"
    assert main(["data", "build", "clevr", "--variant", "clevr-192", "--num", "6", "--out", str(out),
                 "--workers", "2", "--samples", "4"]) == 0
    capsys.readouterr()
    assert main(["eval", "coherency", "--data", str(out), "--json", str(tmp_path / "coh.json")]) == 0
    result = json.loads((tmp_path / "coh.json").read_text())
    assert result["violating"] == 0 and result["images"] == 6
    assert os.path.getsize(out / "images" / os.listdir(out / "images")[0]) > 0


def test_a_scene_hiding_an_object_is_drawn_again_from_its_next_seed(tmp_path, monkeypatch):
    """The redraw loop, with a stand-in for Blender: scene 1's first draw hides its last object."""
    import msgnet.data.clevr as clevr
    from msgnet.data.format import open_dataset

    spec = ClevrSpec(variant="clevr-64", num=4, seed=3)
    hiding = sample_scene(spec, 1)
    calls = []

    def fake_render(spec_, scenes, python, work, workers, progress, desc):
        render = work / "render"
        present = set(os.listdir(render))
        pending = [s for s in scenes if f"{s.index:07d}.mask.png" not in present]
        calls.append(sorted(s.index for s in pending))
        for s in pending:
            mask = np.zeros((64, 64, 3), np.uint8)
            shown = s.objects[:-1] if s == hiding else s.objects
            for k, _ in enumerate(shown):  # a 6x6 block per visible object, none of them touching
                mask[4:10, 4 + 10 * k:10 + 10 * k] = clevr.MASK_COLOURS[k]
            if s == hiding:  # the hidden object shows 2 pixels: fewer than 0.002 of 64x64 (9)
                mask[60, 60:62] = clevr.MASK_COLOURS[len(shown)]
            Image.fromarray(mask).save(render / f"{s.index:07d}.mask.png")
            Image.fromarray(mask).save(render / f"{s.index:07d}.png")
        return len(pending)

    monkeypatch.setattr(clevr, "renderer_python", lambda: Path("/nonexistent/python"))
    monkeypatch.setattr(clevr, "_render_missing", fake_render)
    ds = open_dataset(clevr.build_clevr(spec, tmp_path / "c", progress=False))
    assert calls == [[0, 1, 2, 3], [1]]  # all four, then scene 1 again
    assert ds.info.source["redraws"] == {"1": 1} and ds.info.source["rendered_now"] == 5
    redrawn = sample_scene(spec, 1, attempt=1)
    assert redrawn != hiding
    anns = ds.annotations()
    per_scene = [anns[iid] for iid in sorted(anns)]
    assert [o.category_id for o in per_scene[1]] == [o.class_id for o in redrawn.objects]
    assert all(len(objs) == len(sample_scene(spec, i).objects) for i, objs in enumerate(per_scene) if i != 1)
