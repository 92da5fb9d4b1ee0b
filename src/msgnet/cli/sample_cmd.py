"""`msgnet sample`: image + annotation pairs from a trained run."""

from __future__ import annotations

import argparse
from pathlib import Path

from msgnet.cli.common import add_device_argument, library_default
from msgnet.cli.qc_cmd import add_threshold_arguments, qc_settings_from_args
from msgnet.sampling.settings import LAYOUT_SOURCES, SAMPLERS, GenerationSettings


def register(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser(
        "sample", help="generate images together with their layouts and boxes",
        description="Sample a layout from the LayoutPixelSNAIL, codes from the PixelSNAIL given that "
        "layout, decode: each image arrives with its annotation. With --layouts the layouts are given "
        "instead (the paper's pre-MSGNet). Writes a dataset in the msgnet format (all images in the "
        "'train' split) with a preview grid; streams batch by batch into OUT.partial/ so --resume "
        "completes an interrupted run.",
    )
    p.add_argument("--run", type=Path, required=True, help="a run trained with `msgnet train all`")
    p.add_argument("--num", type=int, required=True, help="number of pairs to generate")
    p.add_argument("--out", type=Path, required=True, help="output dataset folder (must not exist)")
    p.add_argument("--seed", type=int, default=0,
                   help="pair i draws from its own streams seeded by (seed, i): the same pairs at any --batch-size, "
                   "under torchrun or resumed, and from MSGNet.sample [0]")
    p.add_argument("--temperature-layout", type=float, default=1.0)
    # None: the library resolves it to the run's choice (msgnet.sampling.defaults), the one place that default lives.
    p.add_argument("--temperature-codes", type=float, default=None, metavar="T",
                   help="temperature of the codes prior [the run's choice: RUN/probe.json, else 1]")
    p.add_argument("--top-k-layout", type=int, default=None, metavar="K",
                   help="layout prior: draw only among the K most probable classes at each cell [off]")
    p.add_argument("--top-p-layout", type=float, default=None, metavar="P",
                   help="layout prior: draw only among the most probable classes holding mass P [off]")
    p.add_argument("--top-k-codes", type=int, default=None, metavar="K", help="codes prior: top-k truncation [off]")
    p.add_argument("--top-p-codes", type=float, default=None, metavar="P", help="codes prior: top-p truncation [off]")
    p.add_argument("--guidance", type=float, default=None, metavar="S",
                   help="classifier-free layout guidance of the codes prior: logits = uncond + S (cond - uncond), "
                   "1: none; any other S needs a prior trained with prior.condition_dropout > 0 "
                   "[the run's choice: RUN/probe.json, else 1]")
    p.add_argument("--batch-size", type=int, default=16, help="pairs drawn at once: speed and memory only [16]")
    p.add_argument("--sampler", choices=list(SAMPLERS), default=library_default(GenerationSettings, "sampler"),
                   help="cached: exact incremental sampler (fast); reference: one full pass per token; "
                   "cuda-graph: the cached sampler's steps captured in CUDA graphs (GPU only, same tokens)")
    p.add_argument("--layouts", default=None, metavar="DIR|COCO.json",
                   help="condition on these layouts (a msgnet dataset or COCO boxes) instead of sampling them")
    p.add_argument("--layout-source", choices=list(LAYOUT_SOURCES), default=None,
                   help="without --layouts: sample each layout from the layout prior (MSGNet, prior); the same with "
                   "each object given the shape of a real training object of its class and nearest size "
                   "(prior-shapes); or make it from the run's training layouts (real: a declared transform of one, "
                   "or objects of one placed into free space of another, keeping the dataset's rule); the set "
                   "records how each was made [the run's choice: RUN/probe.json, else prior]")
    p.add_argument("--layout-tries", type=int, default=library_default(GenerationSettings, "layout_tries"),
                   metavar="N", help="draw a sampled layout again while it breaks the dataset's declared rule, up "
                   "to N draws in all (1: the layout prior's layouts as drawn) [%(default)s]")
    p.add_argument("--repeat-layouts", action="store_true",
                   help="with --layouts and --num above their count: reuse the layouts in turn")
    p.add_argument("--resume", action="store_true", help="complete an interrupted run into the same --out")
    p.add_argument("--qc", action="store_true",
                   help="quality control: keep sampling until --num pairs pass (see `msgnet qc`); writes qc.csv, "
                   "qc.json, rejected.png and qc_histograms.png beside the pairs")
    p.add_argument("--qc-real", type=Path, default=None, metavar="DIR",
                   help="the real set to check against [the run's training data]")
    p.add_argument("--qc-max-candidates", type=int, default=None, metavar="N",
                   help="stop with a message after N candidates [20 x --num]")
    p.add_argument("--qc-accept-fewer", action="store_true",
                   help="at the cap, keep the pairs that passed (at least one) instead of failing")
    add_threshold_arguments(p)
    add_device_argument(p)
    p.set_defaults(func=_sample)


def _sample(args: argparse.Namespace) -> int:
    import os

    from msgnet.errors import UsageError
    from msgnet.sampling.pipeline import GenerationSettings, generate

    settings = GenerationSettings(
        num=args.num, seed=args.seed, temperature_layout=args.temperature_layout,
        temperature_codes=args.temperature_codes, guidance=args.guidance, top_k_layout=args.top_k_layout,
        top_p_layout=args.top_p_layout, top_k_codes=args.top_k_codes, top_p_codes=args.top_p_codes,
        batch_size=args.batch_size, sampler=args.sampler,
        layouts_from=args.layouts, repeat_layouts=args.repeat_layouts, layout_source=args.layout_source,
        layout_tries=args.layout_tries,
    )
    if not args.qc:
        out = generate(args.run, args.out, settings, resume=args.resume, device=args.device)
        if int(os.environ.get("RANK", "0")) == 0:
            print(_settings_line(out))
            print(f"wrote {args.num} generated pairs to {out} (preview: {out / 'preview.png'})")
        return 0
    if int(os.environ.get("WORLD_SIZE", "1")) > 1:
        raise UsageError("--qc: quality-controlled sampling runs in one process (leave out torchrun)")
    from msgnet.evaluation.qc.request import format_summary
    from msgnet.workflow.checked import generate_checked

    out, record = generate_checked(args.run, args.out, settings, qc_settings_from_args(args), real=args.qc_real,
                                   segmenter_dir=args.segmenter, max_candidates=args.qc_max_candidates,
                                   resume=args.resume, device=args.device, accept_fewer=args.qc_accept_fewer)
    print(format_summary(record))
    print(_settings_line(out))
    print(f"wrote {record['pass_rate']['kept'] if record['stopped_at_cap'] else args.num} generated pairs "
          f"that pass quality control to {out} "
          f"(qc.csv, rejected.png, preview.png)")
    return 0


def _settings_line(out: Path) -> str:
    """The guidance, codes temperature and layout source the set was sampled with and where each came from, as its
    dataset.json records them: without the options they are the run's choice, which the user did not type."""
    import json

    from msgnet.sampling.defaults import DECLARED_DEFAULTS, FROM_DEFAULT, FROM_GIVEN, FROM_PROBE

    source = json.loads((out / "dataset.json").read_text())["source"]
    used, came = source["settings"], source.get("settings_from", {})
    where = {FROM_GIVEN: "given", FROM_PROBE: "the run's choice, RUN/probe.json", FROM_DEFAULT: "default"}
    return "sampled with " + ", ".join(
        f"{name} {_shown(used[name])} ({where.get(came.get(name, FROM_GIVEN), FROM_GIVEN)})" for name in DECLARED_DEFAULTS)


def _shown(value: float | str) -> str:
    return value if isinstance(value, str) else f"{value:g}"
