"""`msgnet eval augment|coherency|fidelity|fid|train-classifier|report`."""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

from msgnet.errors import UsageError


def _ratios(text: str) -> list[float]:
    try:
        vals = [float(v) for v in text.replace(",", " ").split()]
    except ValueError:
        raise argparse.ArgumentTypeError(f"expected numbers like 0.5,1,2, got {text!r}") from None
    if not vals or any(v <= 0 for v in vals):
        raise argparse.ArgumentTypeError("ratios must be positive")
    return vals


def _progress() -> bool:
    return sys.stderr.isatty()


def register(sub: argparse._SubParsersAction) -> None:
    ev = sub.add_parser("eval", help="evaluate datasets and generated samples",
                        description="Evaluate real and generated datasets: U-Net augmentation benchmark, "
                        "rule coherency, annotation fidelity, FID/KID, and a combined report.")
    esub = ev.add_subparsers(dest="eval_command", metavar="SUBCOMMAND")
    esub.required = True

    lay = esub.add_parser("layouts", help="rule coherency of layouts sampled from a run's layout prior",
                          description="Sample --num layouts from RUN/layout_prior alone and check each against "
                          "the rule the training data declared (paper §4.2): the share that obeys, with a "
                          "95% Wilson interval, and which rule parts broke.")
    lay.add_argument("--run", type=Path, required=True)
    lay.add_argument("--num", type=int, default=500)
    lay.add_argument("--seed", type=int, default=0)
    lay.add_argument("--temperature", type=float, default=1.0)
    lay.add_argument("--device", default=None)
    lay.add_argument("--json", type=Path, default=None)
    lay.add_argument("--parts", default=None, metavar="PART[,PART...]",
                     help="check only these parts of the rule (object_count, allowed_class_sets, region, "
                     "no_overlap) [all]")
    lay.add_argument("--preview", type=Path, default=None, metavar="PNG",
                     help="write the first 64 sampled layouts as a colour grid (rule breakers framed red)")
    lay.set_defaults(func=_layouts)

    aug = esub.add_parser("augment", help="U-Net DICE: real only vs real + synthetic vs synthetic only",
                          description="Train a MONAI U-Net to segment layouts (a) on real data, (b) on real + "
                          "synthetic (accuracy), (c) on synthetic only (diversity); test on the REAL "
                          "validation split. Without --synthetic only the real-only baseline runs.")
    aug.add_argument("--real", type=Path, required=True, help="real dataset folder")
    aug.add_argument("--synthetic", type=Path, default=None, help="generated dataset folder")
    _add_unet_options(aug)
    aug.add_argument("--out", type=Path, default=None, help="write the result as JSON here")
    aug.set_defaults(func=_augment)

    coh = esub.add_parser("coherency", help="violation rate of the dataset's declared rule")
    coh.add_argument("--data", type=Path, required=True, help="dataset folder (real or generated)")
    coh.add_argument("--split", action="append", default=None, help="only this split (repeatable) [all]")
    coh.add_argument("--json", type=Path, default=None, help="also write the result as JSON here")
    coh.set_defaults(func=_coherency)

    fid = esub.add_parser("fidelity", help="digit classifier reads each annotated object's class?")
    fid.add_argument("--data", type=Path, required=True, help="dataset folder with digit classes 0-9")
    fid.add_argument("--split", default=None, help="only this split [all; use val for real Multi-MNIST]")
    _add_classifier_option(fid)
    fid.add_argument("--json", type=Path, default=None)
    fid.set_defaults(func=_fidelity)

    fd = esub.add_parser("fid", help="FID/KID of generated vs real validation images (classifier features)")
    fd.add_argument("--real", type=Path, required=True)
    fd.add_argument("--synthetic", type=Path, required=True)
    fd.add_argument("--max-images", type=int, default=5000, help="at most this many synthetic images [5000]")
    _add_classifier_option(fd)
    fd.add_argument("--json", type=Path, default=None)
    fd.set_defaults(func=_fid)

    tc = esub.add_parser("train-classifier", help="train the in-project MNIST digit classifier")
    tc.add_argument("--out", type=Path, default=None, help="output folder [the default location]")
    tc.add_argument("--epochs", type=int, default=None)
    tc.add_argument("--seed", type=int, default=0)
    tc.set_defaults(func=_train_classifier)

    rep = esub.add_parser("report", help="Markdown + JSON report of everything that applies")
    rep.add_argument("--run", type=Path, default=None, help="training run folder (RUN/*/metrics.csv are plotted)")
    rep.add_argument("--real", type=Path, required=True)
    rep.add_argument("--synthetic", type=Path, required=True)
    rep.add_argument("--out", type=Path, default=Path("eval-report"), help="report folder [eval-report]")
    rep.add_argument("--augment", type=Path, default=None,
                     help="reuse the JSON of an earlier `eval augment --out` instead of training U-Nets")
    rep.add_argument("--no-augment", action="store_true", help="skip the U-Net benchmark")
    _add_unet_options(rep)
    _add_classifier_option(rep)
    rep.set_defaults(func=_report)


def _add_unet_options(p: argparse.ArgumentParser) -> None:
    from msgnet.evaluation.unet_benchmark import UNetProtocol

    d = UNetProtocol()
    p.add_argument("--seeds", type=int, default=3, help="number of seeds (0..N-1) [3]")
    p.add_argument("--ratios", type=_ratios, default=[1.0], metavar="R[,R...]",
                   help="synthetic:real ratios for setting (b) [1]")
    p.add_argument("--epochs", type=int, default=d.epochs,
                   help=f"passes over the real training set; same step count in every setting [{d.epochs}]")
    p.add_argument("--batch-size", type=int, default=d.batch_size, help=f"[{d.batch_size}]")


def _add_classifier_option(p: argparse.ArgumentParser) -> None:
    p.add_argument("--classifier", type=Path, default=None,
                   help="trained digit classifier folder [default location, trained on demand]")


def _write_json(path: Path | None, obj: object) -> None:
    if path is None:
        return
    from msgnet.io import atomic_write_json

    atomic_write_json(path, obj)
    print(f"wrote {path}")


def _protocol(args: argparse.Namespace):
    from msgnet.evaluation.unet_benchmark import UNetProtocol

    if args.seeds < 1:
        raise UsageError("--seeds: must be at least 1")
    p = UNetProtocol(epochs=args.epochs, batch_size=args.batch_size)
    p.validate()
    return p


def run_augment(args: argparse.Namespace, log=print) -> tuple[dict, list[str]]:
    """Shared by `eval augment` and `eval report`: open, check, load, run."""
    from msgnet.evaluation.inputs import check_compatible, load_ids, open_input, synthetic_ids
    from msgnet.evaluation.unet_benchmark import Arrays, run_benchmark

    protocol = _protocol(args)
    real = open_input(args.real, "--real")
    syn = open_input(args.synthetic, "--synthetic") if args.synthetic is not None else None
    if syn is not None:
        check_compatible(real, syn)
    real_train = Arrays(*real.load_split("train"))
    real_val = Arrays(*real.load_split("val"))
    synthetic = Arrays(*load_ids(syn, synthetic_ids(syn))) if syn is not None else None
    log("protocol: " + protocol.describe())
    result = run_benchmark(real_train, real_val, real.info.num_classes, protocol, list(range(args.seeds)),
                           synthetic=synthetic, ratios=args.ratios, progress=_progress(), log=log)
    result["real"] = str(real.root)
    result["synthetic"] = None if syn is None else str(syn.root)
    result["class_names"] = real.info.class_names
    return result, real.info.class_names


def _augment(args: argparse.Namespace) -> int:
    from msgnet.evaluation.unet_benchmark import format_benchmark

    result, names = run_augment(args)
    print(format_benchmark(result, names))
    _write_json(args.out, result)
    return 0


def _coherency(args: argparse.Namespace) -> int:
    from msgnet.evaluation.coherency import check_coherency
    from msgnet.evaluation.inputs import open_input

    result = check_coherency(open_input(args.data, "--data"), args.split, progress=_progress())
    print(result.to_text())
    _write_json(args.json, result.to_json())
    return 0


def _fidelity(args: argparse.Namespace) -> int:
    from msgnet.evaluation.digit_classifier import get_classifier
    from msgnet.evaluation.fidelity import annotation_fidelity, format_fidelity
    from msgnet.evaluation.inputs import open_input

    data = open_input(args.data, "--data")
    model, where = get_classifier(args.classifier, progress=_progress())
    result = annotation_fidelity(data, model, args.split, progress=_progress())
    result["classifier"] = str(where)
    print(format_fidelity(result))
    _write_json(args.json, result)
    return 0


def compute_fid(real, syn, model, max_images: int = 5000, progress: bool = False) -> dict:
    """FID/KID of the synthetic set against the real validation split, on whole images and on objects."""
    from msgnet.evaluation.fid import fid_kid, images_to_tensor, object_cells
    from msgnet.evaluation.inputs import load_ids, synthetic_ids

    real_ids = real.ids("val")
    syn_ids = synthetic_ids(syn)[:max_images]
    real_imgs, _ = load_ids(real, real_ids)
    syn_imgs, _ = load_ids(syn, syn_ids)
    out = {"real": f"{real.root} (val split, {len(real_ids)} images)", "synthetic": f"{syn.root} ({len(syn_ids)} images)",
           "images": fid_kid(images_to_tensor(real_imgs), images_to_tensor(syn_imgs), model, "images")}
    ra, sa = real.annotations(), syn.annotations()
    real_cells = object_cells(real_imgs, [[o.bbox for o in ra.get(i, [])] for i in real_ids])
    syn_cells = object_cells(syn_imgs, [[o.bbox for o in sa.get(i, [])] for i in syn_ids])
    import torch

    to_t = lambda c: torch.from_numpy(c).float().div_(255.0).unsqueeze(1)  # noqa: E731
    out["objects"] = fid_kid(to_t(real_cells), to_t(syn_cells), model, "objects")
    return out


def format_fid(result: dict) -> str:
    lines = [f"FID/KID of {result['synthetic']} against {result['real']}"]
    for kind in ("images", "objects"):
        r = result[kind]
        if r["fid"] is None:
            lines.append(f"  {kind:<8} n/a ({r.get('note')})")
            continue
        lines.append(f"  {kind:<8} FID {r['fid']:.4g}   KID {r['kid_mean']:.4g} ± {r['kid_std']:.3g}   "
                     f"({r['n_real']} real / {r['n_fake']} generated; features: {r['features']}, "
                     f"{r['feature_dim']}-d)")
    return "\n".join(lines)


def _fid(args: argparse.Namespace) -> int:
    from msgnet.evaluation.digit_classifier import get_classifier
    from msgnet.evaluation.inputs import check_compatible, open_input

    real = open_input(args.real, "--real")
    syn = open_input(args.synthetic, "--synthetic")
    check_compatible(real, syn)
    if args.max_images < 2:
        raise UsageError("--max-images: need at least 2")
    model, where = get_classifier(args.classifier, progress=_progress())
    result = compute_fid(real, syn, model, args.max_images)
    result["classifier"] = str(where)
    print(format_fid(result))
    _write_json(args.json, result)
    return 0


def _train_classifier(args: argparse.Namespace) -> int:
    from msgnet.evaluation.digit_classifier import ClassifierTraining, default_classifier_dir, train_and_save

    training = ClassifierTraining(seed=args.seed)
    if args.epochs is not None:
        if args.epochs < 1:
            raise UsageError("--epochs: must be at least 1")
        training = ClassifierTraining(epochs=args.epochs, seed=args.seed)
    train_and_save(args.out or default_classifier_dir(), training, progress=_progress())
    return 0


def _report(args: argparse.Namespace) -> int:
    from msgnet.evaluation.report import build_report

    build_report(args)
    return 0


def _layouts(args: argparse.Namespace) -> int:
    from msgnet.evaluation.layout_coherency import sample_layout_coherency
    from msgnet.io import atomic_write_json

    result = sample_layout_coherency(args.run, args.num, seed=args.seed, temperature=args.temperature,
                                     device=args.device,
                                     parts=args.parts.split(",") if args.parts else None)
    print(result.to_text())
    if args.json:
        atomic_write_json(args.json, result.to_json())
    if args.preview:
        from msgnet.layouts.render import save_png

        save_png(result.preview(), args.preview, scale=2)
        print(f"preview: {args.preview}")
    return 0
