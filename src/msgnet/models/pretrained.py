"""One way to save and load every msgnet model: ``save_pretrained(dir)`` / ``from_pretrained(dir)``.

A saved model is a folder with ``config.json`` (its kind and its config) and
``model.safetensors`` (its weights). ``from_pretrained`` rebuilds the model from the config
alone, validates it, and loads the weights strictly; nothing is ever unpickled. Anything a
user could have handed us that does not fit — another kind, a malformed config, weights of
another shape — is a one-line :class:`~msgnet.errors.UsageError` naming the file.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any, ClassVar, TypeVar

import torch

from msgnet.config import from_dict
from msgnet.errors import UsageError
from msgnet.io import load_state_dict, read_model_config, save_model

M = TypeVar("M", bound="PretrainedMixin")


class PretrainedMixin:
    """Adds ``save_pretrained``/``from_pretrained`` to an ``nn.Module`` built as ``Model(config)``.

    Subclasses set ``kind`` (written to config.json) and ``config_class``; a config that needs
    more than :func:`msgnet.config.from_dict` overrides :meth:`config_from_json`.
    """

    kind: ClassVar[str]
    config_class: ClassVar[type]
    config: Any

    def save_pretrained(self, directory: Path | str) -> None:
        """Write ``model.safetensors`` + ``config.json`` into ``directory`` (atomically, file by file)."""
        save_model(self, self.config, directory, self.kind)  # type: ignore[arg-type]

    @classmethod
    def config_from_json(cls, data: dict[str, Any], where: str) -> Any:
        return from_dict(cls.config_class, data, where)

    @classmethod
    def from_pretrained(cls: type[M], directory: Path | str, map_location: str | torch.device = "cpu") -> M:
        """The model saved in ``directory``, on ``map_location``, in eval mode."""
        directory = Path(directory)
        where = str(directory / "config.json")
        kind, data = read_model_config(directory)
        if kind != cls.kind:
            raise UsageError(f"{where}: holds a {kind!r} model, not a {cls.kind!r}")
        if not isinstance(data, dict):
            raise UsageError(f"{where}: \"config\" must be a mapping")
        config = cls.config_from_json(data, where)
        validate = getattr(config, "validate", None)
        if validate is not None:
            try:
                validate()
            except UsageError as exc:
                raise UsageError(f"{where}: {exc}") from None
        model = cls(config)  # type: ignore[call-arg]
        load_weights(model, directory)  # type: ignore[arg-type]
        return model.to(map_location).eval()  # type: ignore[attr-defined,return-value]


def load_weights(model: torch.nn.Module, directory: Path | str) -> None:
    """Load ``directory/model.safetensors`` into ``model`` strictly; a mismatch is a one-line error."""
    where = Path(directory) / "model.safetensors"
    state = load_state_dict(directory)
    try:
        missing, unexpected = model.load_state_dict(state, strict=False)
    except RuntimeError as exc:  # shape mismatches
        first = str(exc).strip().splitlines()[-1].strip()
        raise UsageError(f"{where}: weights do not match config.json ({first})") from None
    if missing or unexpected:
        raise UsageError(f"{where}: weights do not match config.json "
                         f"(missing {sorted(missing)[:3]}, unexpected {sorted(unexpected)[:3]})")
