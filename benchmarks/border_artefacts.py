"""Dotted edge artefacts, measured: how bright the image border is, against real images.

The CPU presets' samples showed dotted lines along the image borders. This prints, per set,
the mean intensity of the outer ``--frame`` pixels and of the inside, and the frame's ratio
to the real set's frame (1.0: borders as clean as real ones), plus the mean intensity of each
border row and column band (top, bottom, left, right), so a remedy can be judged by its effect:

    python benchmarks/border_artefacts.py --real data/mm5k runs/A/gen runs/B/gen
"""

from __future__ import annotations

import argparse

import numpy as np

from msgnet.data.format import open_dataset


def border_profile(images: np.ndarray, frame: int) -> dict[str, float]:
    """Mean intensity (0-1) of the frame, the inside, and the four border bands of (N, H, W, C) uint8."""
    x = images.astype(np.float32).mean(axis=3) / 255.0
    mask = np.zeros(x.shape[1:], dtype=bool)
    mask[:frame] = mask[-frame:] = True
    mask[:, :frame] = mask[:, -frame:] = True
    return {"frame": float(x[:, mask].mean()), "inside": float(x[:, ~mask].mean()),
            "top": float(x[:, :frame].mean()), "bottom": float(x[:, -frame:].mean()),
            "left": float(x[:, :, :frame].mean()), "right": float(x[:, :, -frame:].mean())}


def _images(path: str, limit: int) -> np.ndarray:
    ds = open_dataset(path)
    split = next(s for s in ("test", "val", "train") if ds.info.splits.get(s))
    return ds.load_split(split)[0][:limit]


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--real", required=True, help="a real dataset (its test, val or train split)")
    ap.add_argument("sets", nargs="+", help="generated datasets")
    ap.add_argument("--frame", type=int, default=2, help="border width in pixels [2]")
    ap.add_argument("--limit", type=int, default=2000, help="images per set [2000]")
    args = ap.parse_args()
    real = border_profile(_images(args.real, args.limit), args.frame)
    print(f"{'set':<40} {'frame':>7} {'inside':>7} {'frame/real':>10} "
          f"{'top':>7} {'bottom':>7} {'left':>7} {'right':>7}")
    for name, prof in [(args.real + " (real)", real)] + [(s, border_profile(_images(s, args.limit), args.frame))
                                                         for s in args.sets]:
        print(f"{name:<40} {prof['frame']:7.4f} {prof['inside']:7.4f} {prof['frame'] / real['frame']:10.2f} "
              f"{prof['top']:7.4f} {prof['bottom']:7.4f} {prof['left']:7.4f} {prof['right']:7.4f}")


if __name__ == "__main__":
    main()
