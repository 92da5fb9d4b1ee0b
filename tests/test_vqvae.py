"""Double-path VQ-VAE, its blocks, code stacking, code extraction and inspection (tiny configs)."""

from __future__ import annotations


import numpy as np
import pytest
import torch
from PIL import Image

from msgnet.config import VQVAEConfig
from msgnet.errors import UsageError
from msgnet.io import save_model
from msgnet.models.latents import split_codes, stack_codes, stack_layout
from msgnet.models.vqvae import DoublePathVQVAE
from msgnet.nn.quantizer import VectorQuantizer, perplexity_from_counts
from msgnet.nn.self_attention import SelfAttention2d



TINY = VQVAEConfig(in_channels=1, image_size=16, hidden_dim=16, residual_dim=8, num_residual_blocks=1,
                   embedding_dim=8, num_embeddings=16, latent_size=4, attention_below=16)


def rectangles(n: int, size: int, channels: int, seed: int = 0) -> torch.Tensor:
    g = torch.Generator().manual_seed(seed)
    x = torch.zeros(n, channels, size, size)
    for i in range(n):
        for _ in range(2):
            r, c = torch.randint(0, size - 4, (2,), generator=g).tolist()
            h, w = torch.randint(3, size // 2, (2,), generator=g).tolist()
            x[i, :, r : r + h, c : c + w] = torch.rand(channels, 1, 1, generator=g) * 0.8 + 0.2
    return x


@pytest.mark.parametrize(
    "in_channels,image_size,latent_size,below",
    [(1, 16, 4, 16), (2, 32, 4, 8), (3, 16, 8, 64), (1, 16, 16, 64), (3, 32, 16, 32)],
)
def test_shapes_and_ranges(in_channels, image_size, latent_size, below):
    cfg = VQVAEConfig(in_channels=in_channels, image_size=image_size, hidden_dim=16, residual_dim=8,
                      num_residual_blocks=1, embedding_dim=8, num_embeddings=16, latent_size=latent_size,
                      attention_below=below)
    torch.manual_seed(0)
    model = DoublePathVQVAE(cfg).eval()
    x = torch.rand(2, in_channels, image_size, image_size)
    with torch.no_grad():
        out = model(x)
        assert out.reconstruction.shape == x.shape
        for idx in out.indices:
            assert idx.shape == (2, latent_size, latent_size) and idx.dtype == torch.long
            assert 0 <= int(idx.min()) and int(idx.max()) < 16
        ca, cc = model.encode_indices(x)
        assert torch.equal(ca, out.indices[0]) and torch.equal(cc, out.indices[1])
        y = model.decode_indices(ca, cc)
        assert y.shape == x.shape and float(y.min()) >= 0 and float(y.max()) <= 1
        # decode_indices is the clamped forward reconstruction
        assert torch.allclose(y, out.reconstruction.clamp(0, 1), atol=1e-5)
        a_only, c_only = model.decode_contributions(ca, cc)
        assert a_only.shape == c_only.shape == x.shape
    with pytest.raises(ValueError):
        model(torch.rand(1, in_channels, image_size * 2, image_size * 2))


def test_attention_placed_only_on_small_maps():
    cfg = VQVAEConfig(in_channels=1, image_size=64, hidden_dim=16, residual_dim=8, embedding_dim=8,
                      num_embeddings=16, latent_size=16, attention_below=32)
    model = DoublePathVQVAE(cfg)
    seen: list[int] = []
    hooks = [m.register_forward_hook(lambda _m, inp, _o: seen.append(inp[0].shape[-1]))
             for m in model.modules() if isinstance(m, SelfAttention2d)]
    with torch.no_grad():
        model(torch.rand(1, 1, 64, 64))
    for h in hooks:
        h.remove()
    assert seen and all(s < 32 for s in seen)
    assert sorted(seen) == [16, 16]  # one in the encoder, one in the decoder


def test_self_attention_starts_as_identity_and_maps_sum_to_one():
    torch.manual_seed(0)
    attn = SelfAttention2d(16)
    x = torch.randn(2, 16, 5, 6)
    assert torch.equal(attn(x), x)  # gamma = 0
    with torch.no_grad():
        attn.gamma.fill_(1.0)
    assert not torch.allclose(attn(x), x)
    m = attn.attention_map(x, (2, 3))
    assert m.shape == (2, 5, 6)
    assert torch.allclose(m.sum((1, 2)), torch.ones(2), atol=1e-5)
    with pytest.raises(ValueError):
        attn.attention_map(x, (5, 0))


def test_quantizer_nearest_losses_and_perplexity():
    q = VectorQuantizer(4, 2, beta=0.25)
    with torch.no_grad():
        q.codebook.weight.copy_(torch.tensor([[0.0, 0.0], [1.0, 0.0], [0.0, 1.0], [5.0, 5.0]]))
    z = torch.tensor([[0.9, 0.1], [0.1, 0.8], [4.0, 4.5], [0.1, -0.1]]).t().reshape(1, 2, 2, 2)
    out = q(z)
    assert out.indices.flatten().tolist() == [1, 2, 3, 0]
    assert torch.allclose(out.quantized, q.lookup(out.indices))
    flat = z.permute(0, 2, 3, 1).reshape(-1, 2)
    expected = ((q.codebook.weight[out.indices.flatten()] - flat) ** 2).mean()
    assert torch.allclose(out.codebook_loss, expected)
    assert torch.allclose(out.commitment_loss, 0.25 * expected)
    assert out.counts.tolist() == [1, 1, 1, 1]
    assert torch.allclose(out.perplexity, torch.tensor(4.0))
    assert torch.allclose(perplexity_from_counts(torch.tensor([8, 0, 0, 0])), torch.tensor(1.0))


def test_restart_codes_moves_dead_codes_onto_candidates():
    q = VectorQuantizer(4, 3)
    before = q.codebook.weight.detach().clone()
    cand = torch.randn(10, 3) + 10
    n = q.restart_codes(torch.tensor([False, True, False, True]), cand, torch.Generator().manual_seed(0))
    w = q.codebook.weight.detach()
    assert n == 2
    assert torch.equal(w[0], before[0]) and torch.equal(w[2], before[2])
    for i in (1, 3):
        assert any(torch.equal(w[i], c) for c in cand)


def test_straight_through_gradient_reaches_encoder():
    torch.manual_seed(0)
    model = DoublePathVQVAE(TINY)
    out = model(torch.rand(2, 1, 16, 16))
    out.reconstruction_loss.backward()  # the decoder's loss alone: reaches the encoder only through STE
    for name in ("stem", "enc_out_a", "enc_out_c"):
        grads = [p.grad for p in getattr(model, name).parameters()]
        assert all(g is not None and g.abs().sum() > 0 for g in grads), name
    assert model.quantizer_attn.codebook.weight.grad is None  # codebook learns from its own loss
    model.zero_grad()
    model(torch.rand(2, 1, 16, 16)).codebook_loss.backward()
    assert model.quantizer_attn.codebook.weight.grad.abs().sum() > 0
    assert model.stem.weight.grad is None


def test_one_batch_overfit():
    torch.manual_seed(0)
    model = DoublePathVQVAE(TINY)
    x = rectangles(8, 16, 1)
    opt = torch.optim.Adam(model.parameters(), lr=6e-3)
    first = None
    for _ in range(150):
        out = model(x)
        opt.zero_grad()
        out.loss.backward()
        opt.step()
        first = first if first is not None else float(out.reconstruction_loss.detach())
    model.eval()
    with torch.no_grad():
        mse = float(((model.decode_indices(*model.encode_indices(x)) - x) ** 2).mean())
    assert mse < 0.01, mse  # image-space MSE; starts around 0.1
    assert mse * 4 < first / 5


def test_save_load_identical(tmp_path):
    torch.manual_seed(1)
    model = DoublePathVQVAE(TINY).eval()
    with torch.no_grad():
        for m in model.modules():
            if isinstance(m, SelfAttention2d):
                m.gamma.fill_(0.5)  # make the attention layers matter
    save_model(model, TINY, tmp_path / "vqvae", "vqvae")
    loaded = DoublePathVQVAE.from_pretrained(tmp_path / "vqvae")
    assert loaded.config == TINY
    x = torch.rand(3, 1, 16, 16)
    with torch.no_grad():
        assert torch.equal(model(x).reconstruction, loaded(x).reconstruction)
        codes = model.encode_indices(x)
        assert torch.equal(model.decode_indices(*codes), loaded.decode_indices(*codes))
    save_model(model, TINY, tmp_path / "other", "pixelsnail")
    with pytest.raises(UsageError):
        DoublePathVQVAE.from_pretrained(tmp_path / "other")


def test_stack_split_round_trip():
    a = torch.randint(0, 256, (3, 4, 5))
    c = torch.randint(0, 256, (3, 4, 5))
    s = stack_codes(a, c)
    assert s.shape == (3, 8, 5)
    assert torch.equal(s[:, :4], a)  # self-attention path on top
    a2, c2 = split_codes(s)
    assert torch.equal(a2, a) and torch.equal(c2, c)
    lay = torch.randint(0, 11, (3, 4, 5))
    sl = stack_layout(lay)
    assert sl.shape == (3, 8, 5) and torch.equal(sl[:, :4], lay) and torch.equal(sl[:, 4:], lay)
    with pytest.raises(ValueError):
        split_codes(torch.zeros(1, 3, 5, dtype=torch.long))
    with pytest.raises(ValueError):
        stack_codes(a, c[:, :2])


def test_decoder_attention_map_and_inspect(tmp_path):
    from msgnet.evaluation.vqvae_inspect import vqvae_inspect

    torch.manual_seed(0)
    model = DoublePathVQVAE(TINY).eval()
    codes = model.encode_indices(torch.rand(1, 1, 16, 16))
    m = model.decoder_attention_map(*codes, (15, 15))
    assert m.shape == (1, 8, 8)  # last decoder attention layer sits on the 8x8 map
    assert torch.allclose(m.sum(), torch.tensor(1.0), atol=1e-5)
    save_model(model, TINY, tmp_path / "run" / "vqvae", "vqvae")
    img = tmp_path / "img.png"
    Image.fromarray((np.random.default_rng(0).random((16, 16)) * 255).astype(np.uint8)).save(img)
    paths = vqvae_inspect(tmp_path / "run", img, tmp_path / "out", pixel=(3, 4))
    assert [p.name for p in paths] == ["fig3_paths.png", "fig4_attention.png"]
    with Image.open(paths[0]) as fig3:
        assert fig3.size[0] > 4 * 16 and fig3.size[1] >= 16
    big = tmp_path / "big.png"
    Image.fromarray(np.zeros((32, 32), np.uint8)).save(big)
    with pytest.raises(UsageError):
        vqvae_inspect(tmp_path / "run", big, tmp_path / "out")
    with pytest.raises(UsageError):
        vqvae_inspect(tmp_path / "run", img, tmp_path / "out", pixel=(16, 0))


def test_extract_codes(tmp_path):
    from fixtures import make_tiny_dataset

    from msgnet.data.format import open_dataset
    from msgnet.layouts import downsample_layout
    from msgnet.training.codes import extract_codes, load_codes

    data = make_tiny_dataset(tmp_path / "data", n=12, size=16, channels=1)
    torch.manual_seed(0)
    model = DoublePathVQVAE(TINY).eval()
    save_model(model, TINY, tmp_path / "run" / "vqvae", "vqvae")
    out = extract_codes(tmp_path / "run", data, device="cpu")
    assert out == tmp_path / "run" / "codes"
    ds = open_dataset(data)
    for split in ("train", "val"):
        images, layouts = ds.load_split(split)
        codes, lay, meta = load_codes(tmp_path / "run", split)
        assert codes.shape == (len(images), 8, 4) and lay.shape == (len(images), 4, 4)
        x = torch.from_numpy(images).permute(0, 3, 1, 2).float() / 255
        with torch.no_grad():
            assert torch.equal(codes, stack_codes(*model.encode_indices(x)))
        assert np.array_equal(lay.numpy(), downsample_layout(layouts, 4, num_classes=3))
        assert meta["num_embeddings"] == "16"
    from safetensors.torch import load_file

    raw = load_file(str(out / "train.safetensors"))
    assert raw["codes"].dtype == torch.uint8 and raw["layouts"].dtype == torch.uint8
