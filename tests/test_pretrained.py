"""save_pretrained / from_pretrained: one way to save and rebuild every model, refusals naming the file."""

from __future__ import annotations

import json

import pytest
import torch

from msgnet.config import load_preset
from msgnet.errors import UsageError
from msgnet.evaluation.digit_classifier import DigitClassifier, DigitClassifierConfig
from msgnet.models.layout_prior import LayoutPixelSNAIL
from msgnet.models.pixelsnail import PixelSNAIL
from msgnet.models.priors import load_prior
from msgnet.models.vqvae import DoublePathVQVAE


def _models():
    preset = load_preset("tiny")
    return [
        (DoublePathVQVAE(preset.vqvae), lambda m: m(torch.rand(2, 1, 16, 16)).reconstruction),
        (PixelSNAIL(preset.prior), lambda m: m(torch.randint(0, 16, (2, 8, 4)), torch.randint(0, 3, (2, 8, 4)))),
        (LayoutPixelSNAIL(preset.layout_prior), lambda m: m(torch.randint(0, 3, (2, 4, 4)))),
        (DigitClassifier(DigitClassifierConfig()), lambda m: m(torch.rand(2, 1, 28, 28))),
    ]


@pytest.mark.parametrize("index", range(4), ids=["vqvae", "pixelsnail", "layout_pixelsnail", "digit-classifier"])
def test_every_model_round_trips_and_refuses_what_does_not_fit(index, tmp_path):
    torch.manual_seed(index)
    model, forward = _models()[index]
    model.eval()
    cls = type(model)
    model.save_pretrained(tmp_path / "m")
    loaded = cls.from_pretrained(tmp_path / "m")
    assert type(loaded) is cls and not loaded.training and loaded.config == model.config
    torch.manual_seed(1)
    with torch.no_grad():
        expected = forward(model)
        torch.manual_seed(1)
        assert torch.equal(forward(loaded), expected)
    # another kind in config.json
    other = DoublePathVQVAE if cls is not DoublePathVQVAE else PixelSNAIL
    with pytest.raises(UsageError, match="config.json"):
        other.from_pretrained(tmp_path / "m")
    # weights of another shape
    meta = json.loads((tmp_path / "m" / "config.json").read_text())
    key = {"vqvae": "hidden_dim", "pixelsnail": "channels", "layout_pixelsnail": "channels",
           "digit-classifier": "hidden"}[meta["kind"]]
    meta["config"][key] = meta["config"][key] * 2
    (tmp_path / "m" / "config.json").write_text(json.dumps(meta))
    with pytest.raises(UsageError, match="model.safetensors"):
        cls.from_pretrained(tmp_path / "m")


def test_a_config_json_with_a_nonsense_value_is_refused_naming_it(tmp_path):
    PixelSNAIL(load_preset("tiny").prior).save_pretrained(tmp_path / "p")
    meta = json.loads((tmp_path / "p" / "config.json").read_text())
    meta["config"]["channels"] = -4
    (tmp_path / "p" / "config.json").write_text(json.dumps(meta))
    with pytest.raises(UsageError, match=r"config\.json: .*channels"):
        load_prior(tmp_path / "p")


def test_load_prior_picks_the_class_config_json_names(tmp_path):
    LayoutPixelSNAIL(load_preset("tiny").layout_prior).save_pretrained(tmp_path / "l")
    assert type(load_prior(tmp_path / "l")) is LayoutPixelSNAIL
    DoublePathVQVAE(load_preset("tiny").vqvae).save_pretrained(tmp_path / "v")
    with pytest.raises(UsageError, match="not a prior"):
        load_prior(tmp_path / "v")
