"""Reference and cached samplers: exactness of the cached logits, same tokens for a seed."""

from __future__ import annotations

import itertools

import pytest
import torch

from msgnet.models.layout_prior import LayoutPixelSNAIL
from msgnet.models.pixelsnail import PixelSNAIL
from msgnet.sampling.cached import CachedSampler, sample_cached
from msgnet.sampling.common import pick_tokens
from msgnet.sampling.reference import sample_reference

from test_pixelsnail import tiny_config


# (kernel, attention, conditional, embedding_dim (0: one-hot input), (H, W))
CASES = list(itertools.product((2, 3, 5), (True, False), (True, False), (0, 5), ((5, 7), (6, 3))))


def _model(kernel, attention, conditional, embedding_dim, shape, seed=0) -> PixelSNAIL:
    torch.manual_seed(seed)
    cfg = tiny_config(
        height=shape[0], width=shape[1], kernel_size=kernel, attention=attention,
        num_condition_classes=3 if conditional else 0, embedding_dim=embedding_dim,
        num_res_blocks=2, dropout=0.1,
        # the learned position embedding in part of the cases (it must be folded into the caches)
        position_embedding=kernel != 3 or not attention,
    )
    model = PixelSNAIL(cfg)
    with torch.no_grad():  # non-trivial weights, biases and gains
        for p in model.parameters():
            p.add_(0.1 * torch.randn_like(p))
    return model.eval()


@pytest.mark.parametrize("kernel,attention,conditional,embedding_dim,shape", CASES)
def test_cached_logits_match_full_forward(kernel, attention, conditional, embedding_dim, shape):
    model = _model(kernel, attention, conditional, embedding_dim, shape)
    h, w = shape
    torch.manual_seed(1)
    tokens = torch.randint(0, 6, (3, h, w))
    cond = torch.randint(0, 3, (3, h, w)) if conditional else None
    with torch.no_grad():
        full = model(tokens, cond).flatten(2)  # (B, V, N)
    sampler = CachedSampler(model, 3, cond)
    for p in range(h * w):
        assert sampler.position == p
        cached = sampler.logits()
        err = (cached - full[:, :, p]).abs().max().item()
        assert err < 1e-4, f"position {p}: cached logits differ by {err}"
        sampler.push(tokens.view(3, -1)[:, p])
    assert torch.equal(sampler.tokens, tokens)
    with pytest.raises(IndexError):
        sampler.logits()
    # A reset with another condition starts over with the same caches.
    if conditional:
        cond2 = torch.randint(0, 3, (3, h, w))
        sampler.reset(cond2)
        with torch.no_grad():
            first = model(tokens, cond2)[:, :, 0, 0]
        assert (sampler.logits() - first).abs().max() < 1e-4


@pytest.mark.parametrize("kernel,attention,conditional,embedding_dim,shape", CASES)
def test_cached_and_reference_tokens_identical(kernel, attention, conditional, embedding_dim, shape):
    model = _model(kernel, attention, conditional, embedding_dim, shape)
    cond = torch.randint(0, 3, (5, *shape)) if conditional else None
    ref = sample_reference(model, 5, cond, generator=torch.Generator().manual_seed(7), batch_size=2)
    fast = sample_cached(model, 5, cond, generator=torch.Generator().manual_seed(7), batch_size=3)
    assert torch.equal(ref, fast)
    assert ref.shape == (5, *shape) and ref.min() >= 0 and ref.max() < 6
    # The test can fail: another seed gives other tokens.
    other = sample_cached(model, 5, cond, generator=torch.Generator().manual_seed(8), batch_size=3)
    assert not torch.equal(other, fast)


def test_sampling_is_deterministic_and_independent_of_batch_size_and_threads():
    model = _model(3, True, True, 0, (5, 7))
    cond = torch.randint(0, 3, (5, 7))
    runs = [
        sample_cached(model, 4, cond, temperature=0.8, generator=torch.Generator().manual_seed(3), batch_size=b)
        for b in (1, 4, 3)
    ]
    # Two threads for the rows, and the per-batch timing that picks the token threads.
    runs.append(
        sample_cached(model, 4, cond, temperature=0.8, generator=torch.Generator().manual_seed(3), batch_size=4,
                      threads=2, token_threads=None)
    )
    assert all(torch.equal(runs[0], r) for r in runs[1:])
    assert model.training is False
    assert torch.get_num_threads() == 1  # restored


def test_token_threads_are_chosen_again_every_few_rows_and_follow_the_faster():
    from msgnet.threads import ThreadChooser

    chosen = []
    real = torch.set_num_threads
    try:
        torch.set_num_threads = lambda n: chosen.append(n)  # record instead of changing the process
        chooser = ThreadChooser([1, 2], span=2, period=10)
        slow = {1: 0.5, 2: 0.1}  # first the neighbour is idle: 2 threads win ...
        for p in range(30):
            if p == 15:
                slow = {1: 0.1, 2: 0.9}  # ... then it loads the CPU: 1 thread wins
            if chooser.before(p):
                chooser.after(p, slow[chosen[-1]])
    finally:
        torch.set_num_threads = real
    # probes at tokens 1-4, 11-14, 21-24; each ends by keeping the faster candidate
    assert chosen == [1, 2, 2, 1, 2, 2, 1, 2, 1]


def test_samplers_follow_the_distribution():
    """A prior that ignores its input must give tokens with its own marginal frequencies."""
    torch.manual_seed(0)
    cfg = tiny_config(height=4, width=4, num_condition_classes=0, num_blocks=1, attention=False)
    model = PixelSNAIL(cfg).eval()
    with torch.no_grad():
        model.out_conv.weight_g.zero_()  # logits = bias, independent of the tokens
        model.out_conv.bias.copy_(torch.tensor([2.0, 0.0, -1.0, 1.0, -5.0, 0.5]))
    tokens = sample_cached(model, 400, generator=torch.Generator().manual_seed(0), batch_size=200)
    freq = torch.bincount(tokens.flatten(), minlength=6).double() / tokens.numel()
    expected = torch.softmax(model.out_conv.bias.double(), 0)
    assert (freq - expected).abs().max() < 0.02
    # Low temperature concentrates on the mode.
    cold = sample_cached(model, 20, temperature=0.05, generator=torch.Generator().manual_seed(0))
    assert (cold == 0).all()


def test_pick_tokens_inverse_cdf():
    logits = torch.log(torch.tensor([[0.25, 0.25, 0.5]]))
    for u, expected in ((0.0, 0), (0.2, 0), (0.3, 1), (0.49, 1), (0.51, 2), (0.999999, 2)):
        assert pick_tokens(logits, torch.tensor([u], dtype=torch.float64), 1.0).item() == expected


def test_layout_prior_sampling():
    torch.manual_seed(0)
    cfg = tiny_config(num_condition_classes=0, embedding_dim=4, height=6, width=6)
    model = LayoutPixelSNAIL(cfg).eval()
    a = sample_reference(model, 3, generator=torch.Generator().manual_seed(1))
    b = sample_cached(model, 3, generator=torch.Generator().manual_seed(1))
    assert torch.equal(a, b)


def test_sampler_input_errors():
    model = _model(3, False, True, 0, (5, 7))
    with pytest.raises(ValueError):
        sample_cached(model, 2)  # condition missing
    with pytest.raises(ValueError):
        sample_cached(model, 2, torch.zeros(3, 5, 7, dtype=torch.long))  # 3 conditions, 2 samples
    with pytest.raises(ValueError):
        sample_cached(model, 2, torch.full((5, 7), 9))  # class out of range
    with pytest.raises(ValueError):
        sample_reference(model, 2, torch.zeros(5, 7, dtype=torch.long), temperature=0.0)
    uncond = _model(3, False, False, 0, (5, 7))
    with pytest.raises(ValueError):
        sample_cached(uncond, 2, torch.zeros(5, 7, dtype=torch.long))


def test_reset_writes_each_batch_condition_into_one_buffer():
    """Captured CUDA graphs read the condition from a fixed address: reset must copy, not rebind."""
    model = _model(3, True, True, 5, (5, 7))
    first = torch.randint(0, 3, (4, 5, 7), generator=torch.Generator().manual_seed(0))
    second = torch.randint(0, 3, (4, 5, 7), generator=torch.Generator().manual_seed(1))
    sampler = CachedSampler(model, 4, first)
    where = sampler.cond_rows.data_ptr()
    sampler.reset(second)
    assert sampler.cond_rows.data_ptr() == where
    fresh = CachedSampler(model, 4, second)
    assert torch.equal(sampler.cond_rows, fresh.cond_rows)


needs_cuda = pytest.mark.skipif(not torch.cuda.is_available(), reason="the CUDA-graph sampler needs a CUDA GPU")


@needs_cuda
@pytest.mark.parametrize("conditional", [True, False])
def test_cuda_graph_sampler_draws_the_cached_samplers_tokens(conditional):
    from msgnet.sampling.graphed import CudaGraphSampler

    model = _model(3, True, conditional, 5, (6, 3)).cuda()
    cond = torch.randint(0, 3, (10, 6, 3), generator=torch.Generator().manual_seed(2)) if conditional else None
    eager = sample_cached(model, 10, cond, temperature=0.9, generator=torch.Generator().manual_seed(5), batch_size=4)
    graphed = CudaGraphSampler()
    for _ in range(2):  # the second call replays the graphs captured by the first
        tokens = graphed(model, 10, cond, temperature=0.9, generator=torch.Generator().manual_seed(5), batch_size=4)
        assert torch.equal(tokens, eager)
    assert len(graphed._graphs) == 1
