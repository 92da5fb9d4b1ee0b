"""An RGB microscopy example for `msgnet run`: the immunohistochemistry image that scikit-image ships
(``skimage/data/ihc.png``, 512x512 RGB, colonic tissue stained with DAB and haematoxylin), cut into
16 source images of 128x128 with 2-class masks, written as images/ + masks/ for
`msgnet data import folder`.

The masks are not hand-drawn: they come from colour deconvolution (Ruifrok & Johnston's H-E-DAB
stain vectors) and an Otsu threshold per stain, cleaned by a morphological opening and a minimum
object size — class 1 ``dab`` (brown, DAB-positive tissue), class 2 ``nucleus`` (blue,
haematoxylin-stained nuclei outside DAB). The image is taken from the scikit-image wheel on the
package registry (`pip download`, nothing installed); scikit-image is not a dependency of msgnet.

    python scripts/ihc_tiles.py --out data/ihc-src
    msgnet data import folder data/ihc-src --out data/ihc --classes dab,nucleus --mode tile --size 64 \
        --overlap 0.5 --val-fraction 0.125 --test-fraction 0.125
"""

from __future__ import annotations

import argparse
import io
import subprocess
import sys
import tempfile
import zipfile
from pathlib import Path

import numpy as np
from PIL import Image
from scipy import ndimage

WHEEL = "scikit-image==0.26.0"
MEMBER = "skimage/data/ihc.png"
# Ruifrok & Johnston (2001) optical-density stain vectors: haematoxylin, eosin, DAB.
STAINS = np.array([[0.65, 0.70, 0.29], [0.07, 0.99, 0.11], [0.27, 0.57, 0.78]])


def fetch_ihc() -> np.ndarray:
    """The 512x512 RGB IHC image, read from the scikit-image wheel (downloaded, not installed)."""
    with tempfile.TemporaryDirectory() as tmp:
        subprocess.run([sys.executable, "-m", "pip", "download", WHEEL, "--no-deps", "-q", "-d", tmp], check=True)
        wheel = next(Path(tmp).glob("scikit_image-*.whl"))
        with zipfile.ZipFile(wheel) as z:
            return np.asarray(Image.open(io.BytesIO(z.read(MEMBER))).convert("RGB"))


def otsu(values: np.ndarray) -> float:
    """The threshold that maximises the between-class variance of a 256-bin histogram."""
    hist, edges = np.histogram(values, bins=256)
    centres = (edges[:-1] + edges[1:]) / 2
    w0 = np.cumsum(hist)
    w1 = w0[-1] - w0
    m0 = np.cumsum(hist * centres) / np.maximum(w0, 1)
    m1 = (np.sum(hist * centres) - np.cumsum(hist * centres)) / np.maximum(w1, 1)
    return float(centres[np.argmax(w0 * w1 * (m0 - m1) ** 2)])


def stain_masks(rgb: np.ndarray, min_pixels: int = 30) -> np.ndarray:
    """(H, W) uint8: 0 background, 1 DAB-positive, 2 haematoxylin nucleus (outside DAB)."""
    od = -np.log((rgb.astype(np.float64) + 1.0) / 256.0)
    vectors = STAINS / np.linalg.norm(STAINS, axis=1, keepdims=True)
    hed = od.reshape(-1, 3) @ np.linalg.inv(vectors)
    h, dab = hed[:, 0].reshape(rgb.shape[:2]), hed[:, 2].reshape(rgb.shape[:2])
    layout = np.zeros(rgb.shape[:2], np.uint8)
    for cid, channel in ((1, dab), (2, h)):
        mask = ndimage.binary_opening(channel > otsu(channel), iterations=1)
        labels, n = ndimage.label(mask)
        sizes = ndimage.sum(mask, labels, range(1, n + 1))
        keep = np.isin(labels, 1 + np.flatnonzero(sizes >= min_pixels))
        layout[keep & (layout == 0)] = cid  # DAB first: a nucleus inside DAB tissue stays DAB
    return layout


def main() -> int:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--out", type=Path, required=True, help="folder to write images/ and masks/ into (new)")
    p.add_argument("--pieces", type=int, default=4, help="cut the image into PIECES x PIECES source images [4]")
    args = p.parse_args()
    if args.out.exists():
        print(f"{args.out}: already exists", file=sys.stderr)
        return 2
    rgb = fetch_ihc()
    layout = stain_masks(rgb)
    side = rgb.shape[0] // args.pieces
    (args.out / "images").mkdir(parents=True)
    (args.out / "masks").mkdir()
    for r in range(args.pieces):
        for c in range(args.pieces):
            window = np.s_[r * side : (r + 1) * side, c * side : (c + 1) * side]
            name = f"ihc_r{r}c{c}.png"
            Image.fromarray(rgb[window]).save(args.out / "images" / name)
            Image.fromarray(layout[window]).save(args.out / "masks" / name)
    shares = ", ".join(f"{n} {np.mean(layout == k):.1%}" for k, n in ((0, "background"), (1, "dab"), (2, "nucleus")))
    print(f"wrote {args.pieces ** 2} source images of {side}x{side} to {args.out} ({shares})")
    return 0


if __name__ == "__main__":
    sys.exit(main())
