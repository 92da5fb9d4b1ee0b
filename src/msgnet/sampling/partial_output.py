"""``OUT.partial/``: a sampling run's pairs as they are written, and its progress record.

Each batch's files are written before the record names the batch, so an interrupted run keeps
exactly the batches it finished and ``--resume`` writes the rest; finishing writes annotations,
dataset.json and the preview, then moves the folder into place.
"""

from __future__ import annotations

import contextlib
import json
import os
from dataclasses import replace
from pathlib import Path
from typing import Callable

import numpy as np
from PIL import Image

from msgnet.data.format import DatasetInfo, ObjectAnnotation, coco_document, image_name, write_files
from msgnet.errors import UsageError
from msgnet.io import failures_named
from msgnet.layouts import layout_to_objects, pairs_grid, save_png
from msgnet.locks import release_before_move, writing
from msgnet.sampling.engine import SEEDING


class PartialOutput:
    """``OUT.partial/``: images and layouts written so far plus a progress record (``settings``: the
    sampling settings as a mapping, which a resumed run must match, as must ``record_extra``)."""

    def __init__(self, out: Path, settings: dict, run_dir: Path, resume: bool,
                 record_extra: dict | None = None):
        self.out = out
        self.dir = out.with_name(out.name + ".partial")
        self.progress_path = self.dir / "progress.json"
        # Through JSON once, so the comparison on --resume sees lists where tuples were.
        record = json.loads(json.dumps({"settings": settings, "run": str(run_dir.resolve()), "seeding": SEEDING,
                                        **(record_extra or {})}))
        if out.exists():
            raise UsageError(f"{out}: already exists (choose another `out` or remove it)")
        if self.dir.exists() and not resume:
            raise UsageError(f"{self.dir}: an interrupted run is here; set `resume` to complete it, or remove it")
        existed = self.dir.exists()
        # One writer per sampling run, held until it is finished (or the process ends).
        self._lock = contextlib.ExitStack()
        self._lock.enter_context(writing(self.dir, "sampling run"))
        try:
            if resume and existed:
                self.state = self._resumed(record)
            else:
                (self.dir / "images").mkdir(parents=True, exist_ok=True)
                (self.dir / "layouts").mkdir(exist_ok=True)
                self.state = {**record, "done_batches": [], "objects": {}, "seconds": 0.0}
                self._save_progress()
        except BaseException:
            self._lock.close()
            raise

    def _resumed(self, record: dict) -> dict:
        try:
            state = json.loads(self.progress_path.read_text())
        except (OSError, json.JSONDecodeError):
            raise UsageError(f"{self.progress_path}: unreadable; remove {self.dir} and start again") from None
        differ = sorted(k for k, v in record.items() if state.get(k) != v)
        if differ == ["run"]:
            raise UsageError(f"{self.progress_path}: was started from the run {state.get('run')}, not "
                             f"{record['run']} (a moved or copied run: sample from the original, or start again)")
        if differ:
            raise UsageError(f"{self.progress_path}: was started with other settings ({', '.join(differ)} differ)")
        return state

    def _save_progress(self) -> None:
        tmp = self.progress_path.with_suffix(".tmp")
        tmp.write_text(json.dumps(self.state))
        os.replace(tmp, self.progress_path)

    def write_batch(self, batch_index: int, first_id: int, images: np.ndarray, layouts: np.ndarray,
                    seconds: float, extra: dict | None = None, provenance: list[dict] | None = None) -> None:
        """Write a batch's pairs as ids ``first_id``...; ``extra`` updates the progress record with them;
        ``provenance``: how each pair's layout was made, when it was made from real ones."""
        for k, (img, lay) in enumerate(zip(images, layouts)):
            iid = first_id + k
            with failures_named(self.dir):  # a full disk: a rerun with --resume rewrites the batch
                write_files(self.dir, iid, img, lay)
            self.state["objects"][str(iid)] = [[o.category_id, list(o.bbox)] for o in layout_to_objects(lay)]
            if provenance is not None:
                self.state.setdefault("layout_provenance", {})[str(iid)] = provenance[k]
        # The progress record is written last: a batch counts only once all its files exist.
        self.state["done_batches"].append(batch_index)
        self.state["seconds"] += seconds
        self.state.update(extra or {})
        self._save_progress()

    def finish(self, info: DatasetInfo, source: dict, extra_files: Callable[[Path], None] | None = None) -> Path:
        """Write annotations, dataset.json (``info``'s data, generated as ``source`` records) and the preview
        (and ``extra_files(dir)``), then move into place."""
        palette = info.palette
        info = replace(info, name=f"{info.name}-generated", source=source)
        objects = {int(k): [ObjectAnnotation(int(c), tuple(b)) for c, b in v]  # type: ignore[misc]
                   for k, v in self.state["objects"].items()}
        ids = sorted(objects)
        info.splits = {"train": ids, "val": []}
        (self.dir / "annotations.json").write_text(json.dumps(coco_document(info, objects)))
        (self.dir / "dataset.json").write_text(json.dumps(info.to_json(), indent=2))
        shown = ids[:16]
        imgs = [np.asarray(Image.open(self.dir / "images" / image_name(i))) for i in shown]
        lays = [np.asarray(Image.open(self.dir / "layouts" / image_name(i))) for i in shown]
        h = info.image_size[0]
        save_png(pairs_grid(imgs, lays, palette, columns=8), self.dir / "preview.png",
                 scale=max(1, 128 // h))
        if extra_files is not None:
            extra_files(self.dir)
        self.progress_path.unlink()
        release_before_move(self.dir)
        os.replace(self.dir, self.out)
        self.close()
        return self.out

    def close(self) -> None:
        """Release the writer's lock (finishing does; so does a refusal that leaves the run for later)."""
        self._lock.close()
