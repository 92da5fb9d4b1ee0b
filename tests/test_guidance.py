"""Classifier-free layout guidance and softmax truncation: exact in every sampler, inert when off."""

from __future__ import annotations

import pytest
import torch

from msgnet.config import PixelSNAILConfig
from msgnet.errors import UsageError
from msgnet.models.pixelsnail import PixelSNAIL
from msgnet.sampling.cached import sample_cached
from msgnet.sampling.reference import sample_reference
from msgnet.sampling.rule import TokenRule

from test_pixelsnail import tiny_config


def _model(dropout: float = 0.2, seed: int = 0, **changes) -> PixelSNAIL:
    torch.manual_seed(seed)
    model = PixelSNAIL(tiny_config(condition_dropout=dropout, position_embedding=True, **changes))
    with torch.no_grad():  # non-trivial weights, and a "no layout" row unlike the others
        for p in model.parameters():
            p.add_(0.3 * torch.randn_like(p))
    return model.eval()


def _old_style_reference(model: PixelSNAIL, cond: torch.Tensor, u: torch.Tensor, guidance: float | None) -> torch.Tensor:
    """An independent oracle: full passes, the inverse CDF written out, guidance by its formula."""
    n, h, w = cond.shape
    tokens = torch.zeros(n, h, w, dtype=torch.long)
    with torch.no_grad():
        for p in range(h * w):
            i, j = divmod(p, w)
            logits = model(tokens, cond)[:, :, i, j].double()
            if guidance is not None:
                uncond = model(tokens, model.null_condition(cond))[:, :, i, j].double()
                logits = uncond + guidance * (logits - uncond)
            cdf = torch.softmax(logits, -1).cumsum(-1)
            pick = torch.searchsorted(cdf, (u[:, i, j] * cdf[:, -1]).unsqueeze(1), right=True).squeeze(1)
            tokens[:, i, j] = pick.clamp(max=logits.shape[1] - 1)
    return tokens


@pytest.mark.parametrize("guidance", [0.0, 1.5, 3.0])
def test_guided_cached_equals_guided_reference_and_the_formula(guidance):
    model = _model()
    cond = torch.randint(0, 3, (5, 5, 7), generator=torch.Generator().manual_seed(4))
    ref = sample_reference(model, 5, cond, generator=torch.Generator().manual_seed(7), batch_size=2,
                           guidance=guidance)
    fast = sample_cached(model, 5, cond, generator=torch.Generator().manual_seed(7), batch_size=3,
                         guidance=guidance)
    assert torch.equal(ref, fast)
    u = torch.rand((5, 5, 7), generator=torch.Generator().manual_seed(7), dtype=torch.float64)
    assert torch.equal(fast, _old_style_reference(model, cond, u, guidance))
    # Guidance changes the draw (else the comparisons above could not fail for a wrong formula).
    plain = sample_cached(model, 5, cond, generator=torch.Generator().manual_seed(7), batch_size=3)
    assert not torch.equal(plain, fast)


def test_guidance_one_gives_todays_tokens():
    model = _model()
    cond = torch.randint(0, 3, (4, 5, 7), generator=torch.Generator().manual_seed(1))
    today = sample_cached(model, 4, cond, generator=torch.Generator().manual_seed(3), batch_size=4)
    for sampler in (sample_cached, sample_reference):
        one = sampler(model, 4, cond, generator=torch.Generator().manual_seed(3), batch_size=4, guidance=1.0)
        assert torch.equal(one, today)
    u = torch.rand((4, 5, 7), generator=torch.Generator().manual_seed(3), dtype=torch.float64)
    assert torch.equal(today, _old_style_reference(model, cond, u, None))


def test_guided_truncated_samplers_agree():
    model = _model(seed=2)
    cond = torch.randint(0, 3, (4, 5, 7), generator=torch.Generator().manual_seed(9))
    kwargs = dict(temperature=0.8, top_k=3, top_p=0.9, guidance=2.0, batch_size=2)
    ref = sample_reference(model, 4, cond, generator=torch.Generator().manual_seed(5), **kwargs)
    fast = sample_cached(model, 4, cond, generator=torch.Generator().manual_seed(5), **kwargs)
    assert torch.equal(ref, fast)


def test_guidance_needs_a_prior_that_learned_no_layout():
    model = _model(dropout=0.0)
    cond = torch.zeros(2, 5, 7, dtype=torch.long)
    with pytest.raises(ValueError, match="condition_dropout"):
        sample_cached(model, 2, cond, guidance=2.0)
    with pytest.raises(ValueError):
        model.null_condition(cond)


def test_condition_dropout_zero_is_todays_model_and_training():
    plain = PixelSNAIL(tiny_config())
    zero = PixelSNAIL(tiny_config(condition_dropout=0.0))
    assert {k: v.shape for k, v in plain.state_dict().items()} == {k: v.shape for k, v in zero.state_dict().items()}
    cond = torch.randint(0, 3, (6, 5, 7))
    state = torch.get_rng_state()
    assert zero.drop_condition(cond) is cond  # same tensor, and no random number drawn
    assert torch.equal(torch.get_rng_state(), state)
    guidable = PixelSNAIL(tiny_config(condition_dropout=0.5))
    assert guidable.condition_stack.embedding.num_embeddings == 4  # three classes and "no layout"


def test_condition_dropout_replaces_whole_maps_at_its_rate():
    model = PixelSNAIL(tiny_config(condition_dropout=0.3))
    torch.manual_seed(0)
    cond = torch.randint(0, 3, (4000, 5, 7))
    dropped = model.drop_condition(cond)
    null = (dropped == 3).flatten(1)
    assert torch.equal(null.all(1), null.any(1))  # a map is dropped whole or not at all
    assert torch.equal(dropped[~null.all(1)], cond[~null.all(1)])
    assert abs(null.all(1).float().mean().item() - 0.3) < 0.03


def test_prior_stage_trains_on_dropped_conditions_only_with_dropout():
    from msgnet.training.prior_stage import PriorStage

    tokens = torch.randint(0, 6, (8, 5, 7))
    cond = torch.randint(0, 3, (8, 5, 7))
    seen = []
    for rate in (0.0, 0.99):
        stage = PriorStage(tiny_config(condition_dropout=rate))
        original = stage.model.forward
        stage.model.forward = lambda t, c, f=original: (seen.append(c), f(t, c))[1]  # type: ignore[method-assign]
        torch.manual_seed(0)
        stage.training_step(stage.model, (tokens, cond), 0)
    assert torch.equal(seen[0], cond)
    assert (seen[1] == 3).float().mean() > 0.9


def test_condition_dropout_is_validated():
    with pytest.raises(UsageError, match="condition_dropout"):
        tiny_config(condition_dropout=1.0).validate()
    with pytest.raises(UsageError, match="condition_dropout"):
        tiny_config(condition_dropout=0.1, num_condition_classes=0).validate()
    with pytest.raises(UsageError, match="condition_dropout"):
        tiny_config(condition_dropout=-0.1).validate()
    assert PixelSNAILConfig().condition_dropout == 0.0


@pytest.mark.parametrize("top_k,top_p", [(1, None), (3, None), (None, 0.5), (None, 0.9), (4, 0.7)])
def test_truncation_never_picks_outside_the_kept_set(top_k, top_p):
    gen = torch.Generator().manual_seed(0)
    logits = torch.randn(64, 10, generator=gen) * 2
    rule = TokenRule(temperature=0.9, top_k=top_k, top_p=top_p)
    probs = torch.softmax(logits.double() / 0.9, -1)
    order = probs.argsort(-1, descending=True)
    for u in torch.linspace(0, 1 - 1e-16, 101, dtype=torch.float64):
        picked = rule.pick(logits, u.expand(64))
        rank = (order == picked[:, None]).int().argmax(-1)  # position of the pick in the sorted order
        if top_k is not None:
            assert (rank < top_k).all()
        if top_p is not None:
            mass_before = torch.gather(probs.gather(1, order).cumsum(-1) - probs.gather(1, order), 1, rank[:, None])
            assert (mass_before < top_p).all()


def test_truncation_by_hand():
    logits = torch.log(torch.tensor([[0.1, 0.5, 0.05, 0.35]]))
    kept = TokenRule(top_p=0.8).kept(torch.softmax(logits.double(), -1))
    assert kept.tolist() == [[False, True, False, True]]  # 0.5 + 0.35 reach 0.8; 0.1 is not needed
    assert TokenRule(top_k=1).pick(logits, torch.tensor([0.99], dtype=torch.float64)).item() == 1
    # Untruncated, a u near 1 takes the last token; with top-2 it takes the last kept one (3).
    assert TokenRule().pick(logits, torch.tensor([0.999], dtype=torch.float64)).item() == 3
    assert TokenRule(top_k=2).pick(logits, torch.tensor([0.0], dtype=torch.float64)).item() == 1


def test_token_rule_refuses_nonsense():
    for bad in (dict(top_k=0), dict(top_p=0.0), dict(top_p=1.5), dict(guidance=-1.0), dict(temperature=0.0),
                dict(guidance=float("nan"))):
        with pytest.raises(ValueError):
            TokenRule(**bad)
