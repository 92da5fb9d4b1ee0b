"""`msgnet eval report`: one Markdown + JSON report of every evaluation that applies, with preview
grids and training-curve plots, readable without the terminal."""

from __future__ import annotations

import json
import logging
import time
from dataclasses import dataclass
from pathlib import Path

from msgnet.errors import UsageError
from msgnet.evaluation.stats import fmt_rate
from msgnet.io import atomic_write_json, atomic_write_text

logger = logging.getLogger(__name__)


@dataclass(frozen=True)
class ReportRequest:
    """What `msgnet eval report` is asked for: a real and a generated set, and/or a benchmark JSON."""

    out: Path
    real: Path | None = None
    synthetic: Path | None = None
    augment: Path | None = None  # a `msgnet eval augment --json` file to include instead of running it
    no_augment: bool = False
    run: Path | None = None  # a run whose training curves are plotted
    classifier: Path | None = None
    device: str | None = None


def _preview(dataset, ids, path: Path) -> str:
    from msgnet.layouts.render import pairs_grid, save_png

    ids = list(ids)[:16]
    images = [dataset.read_image(i) for i in ids]
    layouts = [dataset.read_layout(i) for i in ids]
    h, w = dataset.info.image_size
    save_png(pairs_grid(images, layouts, dataset.info.palette, columns=8), path, scale=max(1, 128 // max(h, w)))
    return path.name


def _curves(run: Path | None, out: Path) -> list[dict]:
    from msgnet.evaluation.plots import plot_metrics

    if run is None:
        return []
    if not run.is_dir():
        raise UsageError(f"run {run}: no such directory")
    found = sorted(run.glob("*/metrics.csv")) + sorted(run.glob("metrics.csv"))
    plots = []
    for csv_path in found:
        stage = csv_path.parent.name
        png = plot_metrics(csv_path, out / f"curves_{stage}.png", f"{stage}: {csv_path}")
        if png is not None:
            plots.append({"stage": stage, "csv": str(csv_path), "png": png.name})
    return plots


def _quality_sections(real, syn, req: ReportRequest, out: Path, report: dict, md: list[str], log) -> None:
    """Previews, rule coherency, annotation fidelity and FID/KID of a synthetic set against a real one."""
    from msgnet.evaluation.coherency import check_coherency
    from msgnet.evaluation.digit_classifier import digit_of_class, get_classifier
    from msgnet.evaluation.fid import compute_fid
    from msgnet.evaluation.fidelity import annotation_fidelity
    from msgnet.evaluation.inputs import synthetic_ids

    md += [f"- real: `{real.root}` ({', '.join(f'{k} {len(v)}' for k, v in real.info.splits.items())})",
           f"- synthetic: `{syn.root}` ({len(synthetic_ids(syn))} images used)", ""]

    md += ["## Previews", "", "Each image followed by its layout overlaid.", ""]
    report["previews"] = {"real": _preview(real, real.ids("val"), out / "preview_real.png"),
                          "synthetic": _preview(syn, synthetic_ids(syn), out / "preview_synthetic.png")}
    md += [f"Real (validation): ![real]({report['previews']['real']})", "",
           f"Synthetic: ![synthetic]({report['previews']['synthetic']})", ""]

    from msgnet.evaluation.qc.report import find_qc, qc_section

    qc_dir = find_qc(syn.root)
    if qc_dir is not None:
        report["qc"], qc_lines = qc_section(qc_dir, out)
        md += qc_lines

    log("coherency ...")
    coh_real = check_coherency(real, ["val"], progress=False)
    coh_syn = check_coherency(syn, progress=False)
    report["coherency"] = {"real_val": coh_real.to_json(), "synthetic": coh_syn.to_json()}
    md += ["## Coherency (rule of dataset.json)", ""]
    if not syn.info.rule:
        md += ["The synthetic set declares no rule.", ""]
    else:
        md += [f"Rule: `{json.dumps(syn.info.rule)}`", "", "| set | images | violating | rate (Wilson 95%) | by rule |",
               "|---|---|---|---|---|"]
        for name, r in (("real (val)", coh_real), ("synthetic", coh_syn)):
            lo, hi = r.interval
            md.append(f"| {name} | {r.num_images} | {r.num_violating} | {fmt_rate(r.rate, lo, hi)} | "
                      + ", ".join(f"{k}: {v}" for k, v in r.by_rule.items()) + " |")
        md.append("")

    digits = digit_of_class(real.info.class_names) is not None
    classifier = None
    if digits:
        classifier, where = get_classifier(req.classifier, log=log, progress=False, device=req.device)
        report["classifier"] = str(where)
        log("annotation fidelity ...")
        fr = annotation_fidelity(real, classifier, "val", progress=False, device=req.device)
        fs = annotation_fidelity(syn, classifier, None, progress=False, device=req.device)
        report["annotation_fidelity"] = {"real_val": fr, "synthetic": fs}
        md += ["## Annotation fidelity (digit classifier reads the annotated class)", "",
               f"Classifier: `{where}`. Crops: {fr['crop']}. On real data this is the ceiling.", "",
               "| set | objects | agreement (Wilson 95%) |", "|---|---|---|"]
        for name, r in (("real (val)", fr), ("synthetic", fs)):
            md.append(f"| {name} | {r['objects']} | {fmt_rate(r['agreement'], *r['ci95'])} |")
        md.append("")
        log("FID/KID ...")
        fid = compute_fid(real, syn, classifier, device=req.device)
        report["fid"] = fid
        md += ["## Sample quality (FID / KID against the real validation split)", "",
               "| features | FID | KID | real / generated |", "|---|---|---|---|"]
        for kind in ("images", "objects"):
            r = fid[kind]
            if r["fid"] is None:
                md.append(f"| {kind} | n/a | n/a | {r['n_real']} / {r['n_fake']} |")
            else:
                md.append(f"| {r['features']} ({r['feature_dim']}-d) | {r['fid']:.4g} | "
                          f"{r['kid_mean']:.4g} ± {r['kid_std']:.3g} | {r['n_real']} / {r['n_fake']} |")
        md.append("")
    else:
        md += ["## Annotation fidelity and FID", "",
               "Not computed: the classes are not the digits 0-9, and the only offline feature network is the "
               "in-project digit classifier.", ""]


def build_report(req: ReportRequest, augment_request=None, log=logger.info) -> Path:
    """Write the report; ``augment_request`` (an AugmentRequest) runs the U-Net benchmark when no
    ``--augment`` JSON is given and ``--no-augment`` is not set. Without ``--real``/``--synthetic``
    (only ``--augment``), the report holds the benchmark section alone."""
    from msgnet.evaluation.benchmark.request import run_augment_benchmark
    from msgnet.evaluation.benchmark.report import markdown_section
    from msgnet.evaluation.inputs import check_compatible, open_input

    if req.augment is not None and not req.augment.is_file():
        raise UsageError(f"augment {req.augment}: no such file")
    if (req.real is None or req.synthetic is None) and req.augment is None:
        raise UsageError("real and synthetic: both needed (or only the `augment` JSON, for the benchmark section)")
    real = syn = None
    if req.real is not None and req.synthetic is not None:
        real = open_input(req.real, "real")
        syn = open_input(req.synthetic, "synthetic")
        check_compatible(real, syn)
    aug = None
    if req.augment is not None:
        try:
            aug = json.loads(req.augment.read_text())
            aug["results"]
        except (json.JSONDecodeError, KeyError, TypeError):
            raise UsageError(f"augment {req.augment}: not the results of the U-Net benchmark "
                             "(`msgnet eval augment`)") from None
    out: Path = req.out
    out.mkdir(parents=True, exist_ok=True)
    report: dict = {"created": time.strftime("%Y-%m-%d %H:%M:%S"),
                    "real": None if real is None else str(real.root), "synthetic": None if syn is None else str(syn.root)}
    md = ["# msgnet evaluation report", "", f"- created {report['created']}", ""]
    if real is not None and syn is not None:
        _quality_sections(real, syn, req, out, report, md, log)
    if aug is None and not req.no_augment and augment_request is not None and real is not None:
        log("U-Net benchmark ...")
        aug = run_augment_benchmark(augment_request, log=log)
    if aug is not None:
        report["augment"] = aug
        md += markdown_section(aug, out)

    plots = _curves(req.run, out)
    report["training_curves"] = plots
    if plots:
        md += ["## Training curves", ""]
        for p in plots:
            md += [f"### {p['stage']}", "", f"![{p['stage']}]({p['png']})", ""]
    atomic_write_json(out / "report.json", report)
    atomic_write_text(out / "report.md", "\n".join(md) + "\n")
    log(f"wrote {out / 'report.md'} and {out / 'report.json'}")
    return out / "report.md"
