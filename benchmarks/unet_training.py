"""One U-Net training of the augmentation benchmark: device-resident vs host-fed, CPU vs GPU.

Times ``--steps`` optimiser steps of the benchmark's U-Net (the default protocol, 64x64
Multi-MNIST-shaped batches of 32 real + 32 added images, standard augmentation on) twice per
device, in the same process and interleaved round by round:

* **msgnet**: ``msgnet.evaluation.benchmark.training.train_unet`` — data on the device as uint8,
  batches gathered by index, augmentation on the device, loss read back only at curve
  points, bf16 autocast on CUDA;
* **reference**: the loop the benchmark used before — batches assembled from numpy on the
  host each step, copied to the device, fp32, the loss read back every step.

Prints seconds per step, samples per second, the msgnet/reference speed ratio per device,
and (with a GPU) the GPU/CPU ratio of the msgnet path.

    python benchmarks/unet_training.py --threads 2 --steps 40
    python benchmarks/unet_training.py --device cuda --steps 200
"""

from __future__ import annotations

import argparse
import math
import time

import numpy as np
import torch

from msgnet.augmentation.standard import AugmentationSettings, StandardAugmentation
from msgnet.evaluation.benchmark.exposure import make_plan
from msgnet.evaluation.benchmark.protocol import UNetProtocol, build_unet
from msgnet.evaluation.benchmark.training import DeviceSet, train_unet


def fake_set(n: int, size: int, classes: int, seed: int) -> tuple[np.ndarray, np.ndarray]:
    rng = np.random.default_rng(seed)
    lay = np.zeros((n, size, size), np.uint8)
    for i in range(n):
        for _ in range(3):
            y, x = rng.integers(0, size - 16, 2)
            lay[i, y : y + 14, x : x + 12] = rng.integers(1, classes)
    img = (lay[..., None] * 20 + rng.integers(0, 30, (n, size, size, 1))).astype(np.uint8)
    return img, lay


def reference_steps(images, layouts, added, protocol, steps, device, augment) -> float:
    """The host-fed loop: numpy gather, host-to-device copy, fp32, ``loss.item()`` every step."""
    from monai.losses import DiceCELoss

    torch.manual_seed(0)
    model = build_unet(protocol, images.shape[3], 11).to(device)
    opt = torch.optim.AdamW(model.parameters(), lr=protocol.lr, weight_decay=protocol.weight_decay)
    loss_fn = DiceCELoss(to_onehot_y=True, softmax=True)
    rng = np.random.default_rng(0)
    start = time.perf_counter()
    for _ in range(steps):
        idx = rng.integers(0, len(images), protocol.batch_size)
        jdx = rng.integers(0, len(added[0]), protocol.batch_size)
        x = np.concatenate([images[idx], added[0][jdx]]).transpose(0, 3, 1, 2)
        y = np.concatenate([layouts[idx], added[1][jdx]])
        x = torch.from_numpy(np.ascontiguousarray(x)).float().div_(255.0).to(device)
        y = torch.from_numpy(y).long().to(device)
        x, y = augment(x, y)
        loss = loss_fn(model(x), y.unsqueeze(1))
        opt.zero_grad(set_to_none=True)
        loss.backward()
        opt.step()
        loss.item()
    if device.type == "cuda":
        torch.cuda.synchronize()
    return (time.perf_counter() - start) / steps


def msgnet_steps(images, layouts, added, protocol, steps, device, augment) -> float:
    real = DeviceSet.from_arrays(images, layouts, device)
    extra = DeviceSet.from_arrays(*added, device)
    plan = make_plan(len(real), len(extra), protocol.batch_size, 1.0, steps, seed=0)
    start = time.perf_counter()
    train_unet(DeviceSet.pool(real, extra), plan, 11, protocol, seed=0, augment=augment, progress=False)
    if device.type == "cuda":
        torch.cuda.synchronize()
    return (time.perf_counter() - start) / steps


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--device", default=None, help="cpu, cuda, or both when omitted and CUDA is present")
    ap.add_argument("--steps", type=int, default=40)
    ap.add_argument("--rounds", type=int, default=3)
    ap.add_argument("--threads", type=int, default=None)
    args = ap.parse_args()
    if args.threads:
        torch.set_num_threads(args.threads)
    devices = [args.device] if args.device else (["cpu", "cuda"] if torch.cuda.is_available() else ["cpu"])
    # curve_points=1: the msgnet path evaluates nothing mid-run here, only trains (as the reference).
    protocol = UNetProtocol(curve_points=1)
    images, layouts = fake_set(512, 64, 11, 0)
    added = fake_set(512, 64, 11, 1)
    best: dict[tuple[str, str], float] = {}
    for name in devices:
        device = torch.device(name)
        if device.type == "cuda":
            torch.backends.cuda.matmul.allow_tf32 = True
            torch.backends.cudnn.allow_tf32 = True
        settings = AugmentationSettings(geometric=("affine",))
        for r in range(args.rounds + 1):  # round 0 warms up (cuDNN autotuning, allocator)
            for path, fn in (("msgnet", msgnet_steps), ("reference", reference_steps)):
                aug = StandardAugmentation(settings, device, seed=0)
                t = fn(images, layouts, added, protocol, args.steps if r else 5, device, aug)
                if r:
                    best[(name, path)] = min(best.get((name, path), math.inf), t)
        ms, ref = best[(name, "msgnet")], best[(name, "reference")]
        batch = 2 * protocol.batch_size
        print(f"{name:>5}: msgnet {ms * 1e3:7.1f} ms/step ({batch / ms:7.0f} samples/s)   "
              f"reference {ref * 1e3:7.1f} ms/step ({batch / ref:7.0f} samples/s)   msgnet speed-up {ref / ms:.2f}x")
    if ("cuda", "msgnet") in best and ("cpu", "msgnet") in best:
        print(f"GPU/CPU speed ratio (msgnet path): {best[('cpu', 'msgnet')] / best[('cuda', 'msgnet')]:.1f}x "
              f"(one 1,500-step training: CPU {1500 * best[('cpu', 'msgnet')]:.0f} s, "
              f"GPU {1500 * best[('cuda', 'msgnet')]:.0f} s)")


if __name__ == "__main__":
    main()
