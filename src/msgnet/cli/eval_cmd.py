"""`msgnet eval augment|coherency|layouts|class-gain|fidelity|fid|train-classifier|report`."""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

from msgnet.cli.common import add_device_argument, library_default, pair_policies


def _numbers(kind: type, what: str):
    """argparse type of a list option, ``A,B`` or ``A B``: parsed here, its values checked by the library."""
    def parse(text: str) -> list:
        try:
            values = [kind(v) for v in text.replace(",", " ").split()]
        except ValueError:
            values = []
        if not values:
            raise argparse.ArgumentTypeError(f"expected {what}, got {text!r}")
        return values
    return parse


def _progress() -> bool:
    return sys.stderr.isatty()


def register(sub: argparse._SubParsersAction) -> None:
    from msgnet.evaluation.digit_classifier import ClassifierTraining
    from msgnet.evaluation.requests import FidelityRequest, FidRequest

    ev = sub.add_parser("eval", help="evaluate datasets and generated samples",
                        description="Evaluate real and generated datasets: U-Net augmentation benchmark, "
                        "rule coherency, annotation fidelity, FID/KID, and a combined report.")
    esub = ev.add_subparsers(dest="eval_command", metavar="SUBCOMMAND")
    esub.required = True
    _register_diagnostics(esub)

    aug = esub.add_parser("augment", help="U-Net DICE: real vs standard augmentation vs copy-paste vs synthetic",
                          description="Train a MONAI U-Net to segment layouts on real data alone, with standard "
                          "augmentation, with copy-paste, with generated pairs (alone and added), at one or more "
                          "real-set sizes N; every setting sees the same real batches; test on the REAL test split. "
                          "Ends with a verdict per N: the best setting and its gain over standard augmentation and "
                          "over copy-paste (95%% interval, paired by seed).")
    aug.add_argument("--real", type=Path, required=True, help="real dataset folder")
    aug.add_argument("--synthetic", type=Path, default=None, help="generated dataset folder")
    _add_unet_options(aug)
    add_device_argument(aug)  # the U-Nets train on it
    aug.add_argument("--json", "--out", dest="json", type=Path, default=None,
                     help="write everything (runs, curves, verdict) as JSON here, after every training")
    aug.add_argument("--resume", action="store_true", help="continue the benchmark stored in --json")
    aug.set_defaults(func=_augment)

    coh = esub.add_parser("coherency", help="violation rate of the dataset's declared rule")
    coh.add_argument("--data", type=Path, required=True, help="dataset folder (real or generated)")
    coh.add_argument("--split", action="append", default=None, help="only this split (repeatable) [all]")
    coh.add_argument("--json", type=Path, default=None, help="also write the result as JSON here")
    coh.set_defaults(func=_coherency)

    fid = esub.add_parser("fidelity", help="digit classifier reads each annotated object's class?")
    fid.add_argument("--data", type=Path, required=True, help="dataset folder with digit classes 0-9")
    fid.add_argument("--split", default=library_default(FidelityRequest, "split"),
                     help="only this split [all; use val for real Multi-MNIST]")
    _add_classifier_option(fid)
    add_device_argument(fid)
    fid.add_argument("--json", type=Path, default=None)
    fid.set_defaults(func=_fidelity)

    fd = esub.add_parser("fid", help="FID/KID of generated vs real validation images (classifier features)")
    fd.add_argument("--real", type=Path, required=True)
    fd.add_argument("--synthetic", type=Path, required=True)
    max_images = library_default(FidRequest, "max_images")
    fd.add_argument("--max-images", type=int, default=max_images,
                    help=f"at most this many synthetic images [{max_images}]")
    _add_classifier_option(fd)
    add_device_argument(fd)
    fd.add_argument("--json", type=Path, default=None)
    fd.set_defaults(func=_fid)

    tc = esub.add_parser("train-classifier", help="train the in-project MNIST digit classifier")
    tc.add_argument("--out", type=Path, default=None, help="output folder [the default location]")
    _add_defaults(tc, ClassifierTraining, {"epochs": (int, "passes over the MNIST training digits"),
                                           "seed": (int, "seed of the initial weights and the batch order")})
    add_device_argument(tc)
    tc.set_defaults(func=_train_classifier)

    rep = esub.add_parser("report", help="Markdown + JSON report of everything that applies")
    rep.add_argument("--run", type=Path, default=None, help="training run folder (RUN/*/metrics.csv are plotted)")
    rep.add_argument("--real", type=Path, default=None, help="real dataset folder (needed unless only --augment)")
    rep.add_argument("--synthetic", type=Path, default=None, help="generated dataset folder (likewise)")
    rep.add_argument("--out", type=Path, default=Path("eval-report"), help="report folder [eval-report]")
    rep.add_argument("--augment", type=Path, default=None,
                     help="reuse the JSON of an earlier `eval augment --out` instead of training U-Nets")
    rep.add_argument("--no-augment", action="store_true", help="skip the U-Net benchmark")
    _add_unet_options(rep)
    _add_classifier_option(rep)
    add_device_argument(rep)  # args.device: classifier, fidelity and FID (and the U-Net benchmark)
    rep.set_defaults(func=_report)


def _register_diagnostics(esub: argparse._SubParsersAction) -> None:
    """`eval layouts`, `eval class-gain` and `eval vqvae`: where a run loses its layouts."""
    from msgnet.evaluation.layout_coherency import real_layout_coherency, sample_layout_coherency
    from msgnet.evaluation.requests import ClassGainRequest, VQVAEAdherenceRequest

    lay = esub.add_parser("layouts", help="rule coherency of layouts sampled from a run's layout prior",
                          description="Sample --num layouts from RUN/layout_prior alone and check each against "
                          "the rule the training data declared (paper §4.2): the share that obeys, with a "
                          "95% Wilson interval, and which rule parts broke.")
    source = lay.add_mutually_exclusive_group(required=True)
    source.add_argument("--run", type=Path, help="sample from this run's layout prior")
    source.add_argument("--real", type=Path, metavar="DIR",
                        help="instead, check DIR's real training layouts brought through the latent grid and back "
                        "(the ceiling a prior on that grid can reach)")
    lay.add_argument("--grid", type=int, default=library_default(real_layout_coherency, "grid"),
                     help="with --real: the latent grid side [%(default)s]")
    lay.add_argument("--num", type=int, default=500)
    lay.add_argument("--seed", type=int, default=library_default(sample_layout_coherency, "seed"))
    lay.add_argument("--temperature", type=float, default=library_default(sample_layout_coherency, "temperature"))
    lay.add_argument("--tries", type=int, default=library_default(sample_layout_coherency, "tries"), metavar="N",
                     help="draws per layout while it breaks the rule, as `msgnet sample --layout-tries` (1: the "
                     "prior's layouts as drawn, the paper's coherency) [%(default)s]")
    lay.add_argument("--device", default=None)
    lay.add_argument("--json", type=Path, default=None)
    lay.add_argument("--parts", default=None, metavar="PART[,PART...]",
                     help="check only these parts of the rule (object_count, allowed_class_sets, region, "
                     "no_overlap, orbit) [all]")
    lay.add_argument("--preview", type=Path, default=None, metavar="PNG",
                     help="write the first 64 sampled layouts as a colour grid (rule breakers framed red)")
    lay.set_defaults(func=_layouts)

    cg = esub.add_parser("class-gain", help="does a run's codes prior read which class the layout names?",
                         description="Validation NLL of RUN/prior over object positions with each layout's object "
                         "classes permuted (every object gets another class), minus the NLL with the true layouts, "
                         "in nats per object token. About 0: the prior ignores the classes.")
    cg.add_argument("--run", type=Path, required=True, help="run folder with prior/ and codes/")
    _add_defaults(cg, ClassGainRequest, {"split": (str, "which extracted codes to score"),
                                         "max_maps": (int, "only the first N code maps (0: all)"),
                                         "batch_size": (int, "code maps scored at once"),
                                         "seed": (int, "seed of the class permutations")})
    add_device_argument(cg)
    cg.add_argument("--json", type=Path, default=None, help="also write the result as JSON here")
    cg.set_defaults(func=_class_gain)

    vq = esub.add_parser("vqvae", help="where a run's VQ-VAE loses the layout: reconstruction fidelity, "
                         "decoder obedience, code usage",
                         description="Encode and decode real images with RUN's VQ-VAE: the share of objects the "
                         "digit classifier reads as annotated (the ceiling for every prior), for a decoder told the "
                         "layout the share drawn as a changed layout's class from real codes (obedience), PSNR and "
                         "the codes each path uses.")
    vq.add_argument("--run", type=Path, required=True)
    vq.add_argument("--data", type=Path, required=True, help="the real dataset the run trained on")
    _add_defaults(vq, VQVAEAdherenceRequest, {"split": (str, "which split's images"),
                                              "num": (int, "only the first NUM images (0: all)"),
                                              "seed": (int, "draws the changed layouts")})
    _add_classifier_option(vq)
    add_device_argument(vq)
    vq.add_argument("--json", type=Path, default=None)
    vq.set_defaults(func=_vqvae)


def _add_defaults(p: argparse.ArgumentParser, request: type, options: dict[str, tuple[type, str]]) -> None:
    """One option per field of ``request`` (name -> (type, help)), its default read from the library."""
    for name, (kind, text) in options.items():
        value = library_default(request, name)
        p.add_argument(f"--{name.replace('_', '-')}", type=kind, default=value, help=f"{text} [{value}]")


def _kinds(text: str) -> list[str]:
    return [v.strip() for v in text.split(",") if v.strip()]


def _add_unet_options(p: argparse.ArgumentParser) -> None:
    from msgnet.evaluation.benchmark.protocol import UNetProtocol
    from msgnet.evaluation.benchmark.request import AugmentRequest

    d = UNetProtocol()
    seeds, ratios = library_default(AugmentRequest, "seeds"), library_default(AugmentRequest, "ratios")
    p.add_argument("--seeds", type=int, default=seeds, help=f"number of seeds (0..N-1) [{seeds}]")
    p.add_argument("--ratios", type=_numbers(float, "numbers like 0.5,1,2"), default=ratios, metavar="R[,R...]",
                   help="added:real ratios for copy-paste and synthetic settings "
                   f"[{','.join(f'{r:g}' for r in ratios)}]")
    p.add_argument("--real-subset", type=_numbers(int, "image counts like 100,500,4500"), default=None,
                   metavar="N[,N...]",
                   help="train the U-Net on a fixed seeded subset of N real training images (nested, identical "
                   "across settings); several sizes give a low-data curve [the whole split]")
    settings = library_default(AugmentRequest, "settings")
    p.add_argument("--settings", type=_kinds, default=settings, metavar="KIND[,KIND...]",
                   help=f"which settings to run [{','.join(settings)}; synthetic ones need --synthetic]")
    p.add_argument("--policies", type=pair_policies, default=[], metavar="P[;P...]",
                   help="ways to use the generated pairs, one setting each (real + augmentation + pairs): "
                   "MIXING[@VALUE][,weight=W][,filter=K][,copy-paste=C] with MIXING union, on-top@R or pretrain@F "
                   "(copy-paste=C: with on-top, also C copy-paste images per real image, as augment+copy-paste@C), "
                   "e.g. 'union;on-top@0.25,weight=0.5;pretrain@0.3;on-top@0.25,copy-paste=1' (needs --synthetic)")
    p.add_argument("--keep-policies", type=int, default=None, metavar="K",
                   help="successive halving: every policy trains with seed 0, the K best on the validation split "
                   "train the other seeds [all policies, all seeds]")
    p.add_argument("--keep-baselines", type=int, default=None, metavar="K",
                   help="successive halving of the settings without pairs: each trains with seed 0, the K best on the "
                   "validation split train the other seeds [all, all seeds]")
    p.add_argument("--patience", type=int, default=None, metavar="P",
                   help="stop a U-Net after P of its validation points without a better one [never]")
    p.add_argument("--external-generator", action="store_true",
                   help="compare a synthetic set whose generator saw real images outside the U-Net's training "
                   "images (otherwise refused); the figures then say so")
    p.add_argument("--epochs", type=int, default=d.epochs,
                   help=f"passes over the real training set, at least --min-steps steps [{d.epochs}]")
    p.add_argument("--min-steps", type=int, default=d.min_steps,
                   help=f"never fewer optimiser steps, so the U-Net converges at small N [{d.min_steps}]")
    p.add_argument("--batch-size", type=int, default=d.batch_size, help=f"real images per step [{d.batch_size}]")


def _add_classifier_option(p: argparse.ArgumentParser) -> None:
    p.add_argument("--classifier", type=Path, default=None,
                   help="trained digit classifier folder [default location, trained on demand]")


def _write_json(path: Path | None, obj: object) -> None:
    if path is None:
        return
    from msgnet import __version__
    from msgnet.io import JSON_MARK, atomic_write_json

    # Marked as msgnet's, so that a rerun may replace it (msgnet.io.written_by_msgnet).
    atomic_write_json(path, {**obj, JSON_MARK: __version__} if isinstance(obj, dict) else obj)
    print(f"wrote {path}")


def augment_request(args: argparse.Namespace, json_path: Path | None, resume: bool):
    """The library request of `eval augment` (and of `eval report`, which runs the same benchmark)."""
    from msgnet.evaluation.benchmark.request import AugmentRequest
    from msgnet.evaluation.benchmark.protocol import UNetProtocol

    protocol = UNetProtocol(epochs=args.epochs, min_steps=args.min_steps, batch_size=args.batch_size,
                            patience=args.patience)
    subsets = sorted(set(args.real_subset)) if args.real_subset else None  # nested sizes, smallest first
    return AugmentRequest(real=args.real, synthetic=args.synthetic, subsets=subsets, seeds=args.seeds,
                          ratios=args.ratios, settings=args.settings, policies=args.policies,
                          keep_policies=args.keep_policies, keep_baselines=args.keep_baselines, protocol=protocol, device=args.device,
                          external_generator=args.external_generator, json_path=json_path, resume=resume,
                          progress=_progress())


def _augment(args: argparse.Namespace) -> int:
    from msgnet.evaluation.benchmark.request import run_augment_benchmark
    from msgnet.evaluation.benchmark.report import format_benchmark

    result = run_augment_benchmark(augment_request(args, args.json, args.resume))
    print(format_benchmark(result))
    if args.json is not None:
        print(f"wrote {args.json}")
    return 0


def _coherency(args: argparse.Namespace) -> int:
    from msgnet.evaluation.coherency import check_coherency
    from msgnet.evaluation.inputs import open_input

    result = check_coherency(open_input(args.data, "data"), args.split, progress=_progress())
    print(result.to_text())
    _write_json(args.json, result.to_json())
    return 0


def _fidelity(args: argparse.Namespace) -> int:
    from msgnet.evaluation.fidelity import format_fidelity, run_fidelity
    from msgnet.evaluation.requests import FidelityRequest

    result = run_fidelity(FidelityRequest(data=args.data, split=args.split, classifier=args.classifier,
                                          device=args.device, progress=_progress()))
    print(format_fidelity(result))
    _write_json(args.json, result)
    return 0


def _vqvae(args: argparse.Namespace) -> int:
    from msgnet.evaluation.requests import VQVAEAdherenceRequest
    from msgnet.evaluation.vqvae_adherence import format_vqvae_adherence, measure_vqvae

    result = measure_vqvae(VQVAEAdherenceRequest(run=args.run, data=args.data, split=args.split, num=args.num,
                                                 seed=args.seed, classifier=args.classifier, device=args.device))
    print(format_vqvae_adherence(result))
    _write_json(args.json, result)
    return 0


def _fid(args: argparse.Namespace) -> int:
    from msgnet.evaluation.fid import format_fid, run_fid
    from msgnet.evaluation.requests import FidRequest

    result = run_fid(FidRequest(real=args.real, synthetic=args.synthetic, max_images=args.max_images,
                                classifier=args.classifier, device=args.device, progress=_progress()))
    print(format_fid(result))
    _write_json(args.json, result)
    return 0


def _train_classifier(args: argparse.Namespace) -> int:
    from msgnet.evaluation.digit_classifier import ClassifierTraining, train_and_save

    training = ClassifierTraining(epochs=args.epochs, seed=args.seed)
    train_and_save(args.out, training, progress=_progress(), device=args.device)
    return 0


def _report(args: argparse.Namespace) -> int:
    from msgnet.evaluation.report import ReportRequest, build_report

    req = ReportRequest(out=args.out, real=args.real, synthetic=args.synthetic, augment=args.augment,
                        no_augment=args.no_augment, run=args.run, classifier=args.classifier, device=args.device)
    # The benchmark runs only on a real set (without one, the report holds what --augment gives).
    build_report(req, augment_request=augment_request(args, None, False) if args.real is not None else None)
    return 0


def _class_gain(args: argparse.Namespace) -> int:
    from msgnet.evaluation.class_gain import format_class_gain, measure_class_gain
    from msgnet.evaluation.requests import ClassGainRequest

    result = measure_class_gain(ClassGainRequest(run=args.run, split=args.split, max_maps=args.max_maps,
                                                 batch_size=args.batch_size, seed=args.seed, device=args.device))
    print(format_class_gain(result))
    _write_json(args.json, result)
    return 0


def _layouts(args: argparse.Namespace) -> int:
    from msgnet.evaluation.layout_coherency import real_layout_coherency, sample_layout_coherency

    parts = args.parts.split(",") if args.parts else None
    if args.real is not None:
        result = real_layout_coherency(args.real, args.grid, args.num, parts=parts)
    else:
        result = sample_layout_coherency(args.run, args.num, seed=args.seed, temperature=args.temperature,
                                         device=args.device, parts=parts, tries=args.tries)
    print(result.to_text())
    if args.json:
        _write_json(args.json, result.to_json())
    if args.preview:
        from msgnet.layouts.render import save_png

        save_png(result.preview(), args.preview, scale=2)
        print(f"preview: {args.preview}")
    return 0
