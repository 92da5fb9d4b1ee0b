"""The fast training step (msgnet.training.acceleration): precision choice, channels-last, compile."""

from dataclasses import replace

import pytest
import torch

from msgnet.config import load_preset
from msgnet.io import load_state_dict
from msgnet.models.pixelsnail import PixelSNAIL
from msgnet.models.vqvae import DoublePathVQVAE
from msgnet.nn.quantizer import VectorQuantizer
from msgnet.training import acceleration
from msgnet.training.acceleration import (Precision, compiled_for_training, native_bf16, place_for_training,
                                       uses_bf16)
from msgnet.training.loop import BaseStage, train
from msgnet.training.prior_stage import TensorRows


def test_precision_auto_is_bf16_exactly_where_the_device_has_it():
    cpu = torch.device("cpu")
    assert uses_bf16("auto", cpu) == native_bf16(cpu)
    assert uses_bf16("bf16", cpu) and not uses_bf16("fp32", cpu)
    assert not native_bf16(torch.device("meta"))
    with Precision("bf16", cpu):
        assert torch.get_autocast_dtype("cpu") == torch.bfloat16 and torch.is_autocast_enabled("cpu")
        assert (torch.ones(4, 4) @ torch.ones(4, 4)).dtype == torch.bfloat16
    assert not torch.is_autocast_enabled("cpu")
    with Precision("fp32", cpu):
        assert (torch.ones(4, 4) @ torch.ones(4, 4)).dtype == torch.float32


def test_quantizer_chooses_in_fp32_under_bf16_autocast():
    torch.manual_seed(0)
    vq = VectorQuantizer(64, 8)
    torch.nn.init.normal_(vq.codebook.weight)
    # Encoder outputs close to the middle between codes: bf16 distances would pick differently.
    z = (vq.codebook.weight[:32] * 0.5 + vq.codebook.weight[32:] * 0.5 + 1e-3 * torch.randn(32, 8))
    z = z.T.reshape(1, 8, 4, 8).contiguous()
    plain = vq(z)
    with Precision("bf16", torch.device("cpu")):
        fast = vq(z)
        flat = z.permute(0, 2, 3, 1).reshape(-1, 8)
        in_bf16 = vq.nearest(flat)  # what forward would pick without its fp32 guard
    assert torch.equal(plain.indices, fast.indices)
    assert not torch.equal(plain.indices.flatten(), in_bf16)  # so the guard matters here
    assert fast.quantized.dtype == torch.float32 and fast.codebook_loss.dtype == torch.float32
    assert torch.equal(plain.counts, torch.bincount(plain.indices.flatten(), minlength=64))


def test_the_vqvae_trains_channels_last_and_saves_weights_any_model_loads(tmp_path):
    from tests.fixtures import make_tiny_dataset
    from msgnet.training.vqvae_stage import train_vqvae

    preset = load_preset("tiny")
    preset = replace(preset, vqvae_train=replace(preset.vqvae_train, iterations=3, image_every=0))
    model = place_for_training(DoublePathVQVAE(preset.vqvae), torch.device("cpu"))
    conv = model.enc_out_a[0].weight  # (h, h, 3, 3): the two layouts differ
    assert conv.is_contiguous(memory_format=torch.channels_last) and not conv.is_contiguous()
    data = make_tiny_dataset(tmp_path / "d", n=12, n_val=2)
    out = train_vqvae(preset, data, tmp_path / "run", device="cpu")
    saved = load_state_dict(out)
    assert all(t.is_contiguous() for t in saved.values())
    again = DoublePathVQVAE.from_pretrained(out, torch.device("cpu"))
    x = torch.rand(2, 1, preset.vqvae.image_size, preset.vqvae.image_size)
    model.load_state_dict(saved)
    model.eval()
    assert torch.allclose(again(x).reconstruction, model(x).reconstruction, atol=1e-6)


class _PriorStage(BaseStage):
    name = "prior"
    kind = "pixelsnail"

    def __init__(self, config):
        self.config = config
        torch.manual_seed(0)
        self.model = PixelSNAIL(config)

    def training_step(self, model, batch, step):
        tokens, condition = batch
        loss = torch.nn.functional.cross_entropy(model(tokens, condition), tokens.long())
        return loss, {"loss": loss.detach()}

    def evaluate(self, model, batches):
        return {"loss": sum(float(model.loss(t, c)[0]) for t, c in batches)}


@pytest.mark.slow
def test_compiled_training_follows_eager_training(tmp_path, monkeypatch):
    preset = load_preset("tiny")
    cfg = replace(preset.prior, dropout=0.0)  # compiled dropout draws its masks differently
    g = torch.Generator().manual_seed(1)
    rows = TensorRows(torch.randint(cfg.num_classes, (16, cfg.height, cfg.width), generator=g),
                      torch.randint(cfg.num_condition_classes, (16, cfg.height, cfg.width), generator=g))
    base = replace(preset.prior_train, iterations=4, epochs=0, batch_size=4, image_every=0, checkpoint_every=100,
                   precision="fp32")
    weights = {}
    for compiled in (False, True):
        stage = _PriorStage(cfg)
        train(stage, rows, rows, replace(base, compile=compiled), tmp_path / str(compiled), device="cpu", log=lambda _: None)
        weights[compiled] = load_state_dict(tmp_path / str(compiled) / "prior")
    # Adam turns rounding-level gradient differences into whole steps where gradients are near zero,
    # so the two runs are compared by what they learned: the validation loss of the saved weights.
    start = _PriorStage(cfg).model.state_dict()
    assert any(not torch.equal(weights[True][k], start[k]) for k in start)  # it trained
    losses = {}
    for compiled, w in weights.items():
        model = _PriorStage(cfg).model
        model.load_state_dict(w)
        with torch.no_grad():
            losses[compiled] = float(model.loss(*rows.batch_of(torch.arange(16)))[0])
    untrained = float(_PriorStage(cfg).model.loss(*rows.batch_of(torch.arange(16)))[0])
    assert losses[True] == pytest.approx(losses[False], rel=1e-3) and losses[True] < untrained - 1e-3
    # One step's loss and gradients: the compiled module computes what the plain one does.
    model = _PriorStage(cfg).model
    compiled = compiled_for_training(model, torch.device("cpu"), True)
    tokens, condition = rows.batch_of(torch.arange(4))
    grads = []
    for call in (model, compiled):
        model.zero_grad()
        loss = torch.nn.functional.cross_entropy(call(tokens, condition), tokens.long())
        loss.backward()
        grads.append((float(loss), [p.grad.clone() for p in model.parameters()]))
    assert grads[0][0] == pytest.approx(grads[1][0], rel=1e-5)
    assert all(torch.allclose(a, b, atol=1e-5, rtol=1e-3) for a, b in zip(grads[0][1], grads[1][1]))
    # Without a C++ compiler a CPU run says so and trains uncompiled.
    monkeypatch.setattr(acceleration.shutil, "which", lambda _: None)
    said = []
    train(_PriorStage(cfg), rows, rows, replace(base, compile=True), tmp_path / "nocc", device="cpu", log=said.append)
    assert any("no C++ compiler" in s for s in said)
    assert all(torch.equal(load_state_dict(tmp_path / "nocc" / "prior")[k], v) for k, v in weights[False].items())
