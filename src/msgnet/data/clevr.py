"""``msgnet data build clevr``: CLEVR-like scenes rendered by Blender, with exact layouts and boxes.

The authors rendered their CLEVR sets with Blender and never released them; this renders ours.
Scenes come from :mod:`msgnet.data.clevr_scenes` (a pure function of the seed and the scene
index); :mod:`msgnet.data.clevr_render` renders them inside Blender's own Python, which lives in
a separate environment (``msgnet data setup-clevr``, or any Python that imports ``bpy`` named by
``$MSGNET_BPY_PYTHON``) because ``bpy`` pins its own numpy. ``--workers K`` runs K Blender
processes, each on every K-th scene still missing.

Rendering streams into ``OUT.partial/render/``; every file there is complete (renamed into
place), so an interrupted build resumes with ``--resume`` and renders only what is missing.
A scene in which an object shows fewer than ``min_visible_fraction`` of the image's pixels (hidden
behind others) is drawn again from its next seed, as CLEVR does, until none is left (at most
``MAX_REDRAWS`` rounds); how many scenes were redrawn is recorded in dataset.json.
When all scenes exist, the dataset is assembled atomically into ``OUT``: the image, the layout
(each pixel the class of the object the camera sees there: occlusion as rendered), the object
boxes from each object's own mask (objects hidden entirely are left out and counted), and the
variant's rule in dataset.json (``object_count``; for clevr-192 also ``orbit``, the orbit as
projected by the camera).
"""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
import time
from dataclasses import asdict
from pathlib import Path

import numpy as np
from PIL import Image
from tqdm.auto import tqdm

from msgnet.data.checks import check_count
from msgnet.data.clevr_scenes import ClevrSpec, Scene, class_infos, orbit_points, sample_scene
from msgnet.data.format import DatasetInfo, DatasetWriter, ObjectAnnotation
from msgnet.errors import UsageError
from msgnet.io import atomic_write_json, msgnet_home

BPY_VERSION = "5.0.1"
MASK_COLOURS = np.array([(1, 0, 0), (0, 1, 0), (0, 0, 1), (1, 1, 0), (1, 0, 1), (0, 1, 1)]) * 255
RENDER_SCRIPT = Path(__file__).with_name("clevr_render.py")
MAX_REDRAWS = 20  # rounds of redrawing scenes with a poorly visible object (one round fixes almost all)
ORBIT_TOLERANCE = 0.06  # of the image side: how far a box centre may lie from the centre or the orbit


def renderer_env() -> Path:
    return msgnet_home() / "clevr-renderer"


def renderer_python() -> Path:
    """The Python that imports ``bpy``: ``$MSGNET_BPY_PYTHON``, else the one ``setup-clevr`` made."""
    named = os.environ.get("MSGNET_BPY_PYTHON")
    path = Path(named) if named else renderer_env() / "bin" / "python"
    if not path.is_file():
        where = f"$MSGNET_BPY_PYTHON ({named})" if named else str(path)
        raise UsageError(f"{where}: no Blender Python to render CLEVR scenes; run `msgnet data setup-clevr` "
                         f"(installs bpy {BPY_VERSION}, about 1 GB, into its own environment)")
    return path


def setup_renderer(env: Path | None = None) -> Path:
    """Make a virtual environment with ``bpy`` (and the numpy it needs) beside msgnet's own."""
    env = env or renderer_env()
    if sys.version_info[:2] != (3, 11):
        raise UsageError(f"setup-clevr: bpy {BPY_VERSION} needs Python 3.11; this is "
                         f"{sys.version_info[0]}.{sys.version_info[1]} (make the environment with a 3.11 and "
                         "set $MSGNET_BPY_PYTHON to its python)")
    # Built beside its place and renamed once bpy imports: a failed install leaves no half environment.
    partial = env.with_name(env.name + ".partial")
    shutil.rmtree(partial, ignore_errors=True)
    subprocess.run([sys.executable, "-m", "venv", str(partial)], check=True)
    python = partial / "bin" / "python"
    subprocess.run([str(python), "-m", "pip", "install", "-q", f"bpy=={BPY_VERSION}", "numpy<2"], check=True)
    subprocess.run([str(python), "-c", "import bpy"], check=True)
    shutil.rmtree(env, ignore_errors=True)
    os.replace(partial, env)
    return env / "bin" / "python"


def _decode_mask(mask: np.ndarray, num_objects: int) -> np.ndarray:
    """(H, W, 3) mask pass -> (H, W) object index (-1: no object), by the nearest flat colour."""
    palette = np.concatenate([np.zeros((1, 3)), MASK_COLOURS[:num_objects]])
    dist = ((mask[..., None, :3].astype(float) - palette) ** 2).sum(-1)
    return dist.argmin(-1) - 1


def _object_owner(scene: Scene, render_dir: Path) -> np.ndarray:
    """(H, W) index of the object seen at each pixel of a rendered scene (-1: none)."""
    mask = np.asarray(Image.open(render_dir / f"{scene.index:07d}.mask.png").convert("RGB"))
    return _decode_mask(mask, len(scene.objects))


def scene_pair(scene: Scene, render_dir: Path) -> tuple[np.ndarray, np.ndarray, list[ObjectAnnotation], int]:
    """(image (H, W, 3), layout (H, W), objects, objects hidden entirely) of a rendered scene."""
    image = np.asarray(Image.open(render_dir / f"{scene.index:07d}.png").convert("RGB"))
    owner = _object_owner(scene, render_dir)
    layout = np.zeros(owner.shape, dtype=np.uint8)
    objects, hidden = [], 0
    for k, obj in enumerate(scene.objects):
        ys, xs = np.nonzero(owner == k)
        if len(ys) == 0:
            hidden += 1
            continue
        layout[owner == k] = obj.class_id
        objects.append(ObjectAnnotation(obj.class_id, (int(xs.min()), int(ys.min()), int(xs.max() - xs.min() + 1),
                                                       int(ys.max() - ys.min() + 1))))
    return image, layout, objects, hidden


def rule_for(spec: ClevrSpec, projection: list[list[float]] | None) -> dict:
    if spec.variant == "clevr-64":
        return {"object_count": {"min": 2, "max": 4}, "description": "two to four objects"}
    size = spec.image_size
    assert projection is not None
    path = [[round(x, 2), round(y, 2)] for x, y in projection[1:]]
    centre = [round(v, 2) for v in projection[0]]
    return {"object_count": {"min": 2, "max": 2},
            "orbit": {"centre": centre, "centre_tolerance": round(ORBIT_TOLERANCE * size, 2), "path": path,
                      "path_tolerance": round(ORBIT_TOLERANCE * size, 2)},
            "description": "one object in the centre, one orbiting it at a fixed radius"}


class _Workers:
    """K Blender processes rendering their share of the missing scenes into ``render_dir``."""

    def __init__(self, python: Path, jobs: list[dict], work: Path) -> None:
        self.logs = [work / f"worker-{k}.log" for k in range(len(jobs))]
        self.procs = []
        for k, job in enumerate(jobs):
            jobs_path = work / f"jobs-{k}.json"
            jobs_path.write_text(json.dumps(job))
            with self.logs[k].open("w") as log:
                self.procs.append(subprocess.Popen([str(python), str(RENDER_SCRIPT), str(jobs_path),
                                                    str(work / "render")], stdout=log, stderr=subprocess.STDOUT))

    def running(self) -> bool:
        return any(p.poll() is None for p in self.procs)

    def check(self) -> None:
        for p, log in zip(self.procs, self.logs):
            if p.wait() != 0:
                tail = log.read_text(errors="replace").strip().splitlines()[-5:]
                raise RuntimeError(f"a Blender worker failed (exit {p.returncode}); log {log}:\n" + "\n".join(tail))

    def stop(self) -> None:
        for p in self.procs:
            if p.poll() is None:
                p.terminate()
        for p in self.procs:
            p.wait()


def build_clevr(spec: ClevrSpec, out: Path | str, workers: int = 1, resume: bool = False,
                progress: bool = True) -> Path:
    """Render ``spec.num`` scenes with ``workers`` Blender processes and write the dataset ``out``."""
    if not isinstance(spec, ClevrSpec):
        raise UsageError(f"spec: a ClevrSpec, not {type(spec).__name__}")
    check_count("workers", workers)
    out = Path(out)
    work = out.with_name(out.name + ".partial")
    if out.exists():
        raise UsageError(f"out {out}: already exists (choose another `out` or remove it)")
    record = {"spec": asdict(spec)}
    if work.exists():
        if not resume:
            raise UsageError(f"{work}: an interrupted build is here; set `resume` to complete it, or remove it")
        try:
            same = json.loads((work / "spec.json").read_text()) == json.loads(json.dumps(record))
        except (OSError, json.JSONDecodeError):
            same = False
        if not same:
            raise UsageError(f"{work / 'spec.json'}: was started with other settings; remove {work} to start again")
    python = renderer_python()  # before anything is written
    render = work / "render"
    render.mkdir(parents=True, exist_ok=True)
    (work / "spec.json").write_text(json.dumps(record))
    attempts_path = work / "attempts.json"  # scene index -> redraws so far (a resumed build keeps them)
    attempts = {int(k): v for k, v in json.loads(attempts_path.read_text()).items()} if attempts_path.is_file() else {}
    started = time.perf_counter()
    rendered = 0
    to_check = range(spec.num)  # every scene once (a resumed build's too), then only the redrawn ones
    for round_ in range(MAX_REDRAWS + 1):
        scenes = [sample_scene(spec, i, attempts.get(i, 0)) for i in range(spec.num)]
        rendered += _render_missing(spec, scenes, python, work, workers, progress,
                                    "rendering" if round_ == 0 else f"redrawing (round {round_})")
        poorly = [i for i in to_check
                  if min(_visible_pixels(scenes[i], render), default=0) < spec.min_visible_pixels]
        if not poorly or round_ == MAX_REDRAWS:
            break
        # Old files first, then the new attempt numbers: a build stopped in between re-renders the
        # old draw and redraws it again, never pairs old files with a new draw.
        for index in poorly:
            attempts[index] = attempts.get(index, 0) + 1
            for suffix in (".png", ".mask.png"):
                (render / f"{index:07d}{suffix}").unlink()
        atomic_write_json(attempts_path, attempts)
        to_check = poorly
    seconds = time.perf_counter() - started
    return _assemble(spec, scenes, work, out, rendered, seconds, attempts)


def _render_missing(spec: ClevrSpec, scenes: list[Scene], python: Path, work: Path, workers: int,
                    progress: bool, desc: str) -> int:
    """Render the scenes whose files are not in ``work/render`` yet; returns how many it rendered."""
    render = work / "render"
    present = set(os.listdir(render))
    pending = [s for s in scenes if f"{s.index:07d}.png" not in present or f"{s.index:07d}.mask.png" not in present]
    need_projection = spec.variant == "clevr-192" and "projection.json" not in present
    if not pending and not need_projection:
        return 0
    count = min(workers, max(len(pending), 1))
    jobs = [{"samples": spec.samples, "image_size": spec.image_size,
             "scenes": [s.to_json() for s in pending[k::count]]} for k in range(count)]
    if need_projection:
        jobs[0]["project"] = [[0.0, 0.0, 0.7], *[list(p) for p in orbit_points()]]
    before = _finished(render)
    bar = tqdm(total=len(pending), desc=f"{desc} {spec.variant}", unit="scene", disable=not progress)
    pool = _Workers(python, jobs, work)
    try:
        while pool.running():
            time.sleep(1.0)
            bar.update(min(_finished(render) - before, len(pending)) - bar.n)
        pool.check()
    except BaseException:
        pool.stop()
        raise
    bar.update(len(pending) - bar.n)
    bar.close()
    return len(pending)


def _finished(render: Path) -> int:
    # One directory listing per poll (testing every scene's files cost the workers ~15% at 10,000).
    return sum(name.endswith(".mask.png") and not name.endswith(".partial.png") for name in os.listdir(render))


def _visible_pixels(scene: Scene, render: Path) -> list[int]:
    """Pixels of each object of a rendered scene that the camera sees (occlusion as rendered)."""
    owner = _object_owner(scene, render)
    return np.bincount(owner.ravel() + 1, minlength=len(scene.objects) + 1)[1:].tolist()


def _assemble(spec: ClevrSpec, scenes: list[Scene], work: Path, out: Path, rendered: int, seconds: float,
              attempts: dict[int, int]) -> Path:
    render = work / "render"
    projection = json.loads((render / "projection.json").read_text()) if spec.variant == "clevr-192" else None
    sizes = spec.split_sizes()
    info = DatasetInfo(
        name=spec.variant, image_size=(spec.image_size, spec.image_size), channels=3, classes=class_infos(),
        splits={"train": [], "val": [], "test": []},
        source={"builder": "clevr", "renderer": f"Blender {BPY_VERSION} (bpy), Cycles, {spec.samples} samples",
                **asdict(spec), "rendered_now": rendered, "render_seconds": round(seconds, 1),
                # index -> draws after the first: sample_scene(spec, index, attempt) is what was rendered
                "scenes_redrawn": len(attempts), "redraws": {str(k): v for k, v in sorted(attempts.items())},
                "layout": "each pixel the class (shape x colour) of the object seen there, from an emission pass"},
        rule=rule_for(spec, projection),
        augmentations=[],  # a mirrored or turned scene moves its shadows against the light: not valid
    )
    hidden = 0
    with DatasetWriter(out, info) as writer:
        for k, scene in enumerate(scenes):
            split = "train" if k < sizes["train"] else "val" if k < sizes["train"] + sizes["val"] else "test"
            image, layout, objects, gone = scene_pair(scene, render)
            hidden += gone
            writer.add(split, image, layout, objects)
        writer.info.source["objects_hidden_entirely"] = hidden
    shutil.rmtree(work)
    return out
