"""The sampling settings a run samples with when none are given: the run's own choice, else the declared defaults.

``msgnet run`` chooses the codes prior's guidance and temperature on a probe of declared candidates
(:mod:`msgnet.workflow.probe`) and keeps the table and its choice in ``RUN/probe.json``. `msgnet sample`
and ``MSGNet.sample`` leave a setting None when the user gives none; :func:`resolve_sampling` is the one
place that turns None into that choice (or, without a probe, into :data:`DECLARED_DEFAULTS`, what
sampling always did) and says where each value came from, so the generated set can record it. A value
the user gives always wins.
"""

from __future__ import annotations

import json
import math
from pathlib import Path
from typing import Any, Mapping

from msgnet.errors import UsageError
from msgnet.run_dir import RunDir
from msgnet.sampling.settings import LAYOUT_SOURCES

# The settings a probe chooses, and what sampling uses without one (guidance 1: none; temperature 1: the
# model's own distribution; layouts as the layout prior draws them). The probe's candidates
# (msgnet.workflow.probe.Candidate) set exactly these.
DECLARED_DEFAULTS: dict[str, float | str] = {"guidance": 1.0, "temperature_codes": 1.0, "layout_source": "prior"}

# Where a resolved setting came from, as the generated set records it.
FROM_GIVEN, FROM_PROBE, FROM_DEFAULT = "given", "probe.json", "default"


def run_sampling_defaults(run_dir: Path | str,
                          guidable: bool | None = True) -> dict[str, tuple[float | str, str]]:
    """Each setting of :data:`DECLARED_DEFAULTS` as the run samples with it when none is given, and its
    source: ``RUN/probe.json``'s choice (:data:`FROM_PROBE`), else the declared default (:data:`FROM_DEFAULT`).

    ``guidable``: whether the run's codes prior can be guided (``GenerationRun.images.guidable``; None where
    guidance does not apply). A probe only tries guidance above 1 on a guidable prior, so a choice of
    guidance a prior cannot follow comes from another prior (a retrained or replaced one): the whole
    choice is stale (its temperature was chosen together with that guidance) and the defaults apply.
    """
    path, chosen = RunDir(run_dir).probe_json, {}
    if path.is_file():
        # A damaged file is refused rather than skipped: silently sampling with other settings than the run
        # chose would make a set the user did not ask for.
        try:
            record: Any = json.loads(path.read_text())
            row = record["rows"][record["chosen"]]
            chosen = {name: _typed(name, row[name]) for name in DECLARED_DEFAULTS if name in row}
        except (OSError, ValueError, KeyError, IndexError, TypeError):
            raise UsageError(f"{path}: unreadable, no chosen row; give {', '.join(DECLARED_DEFAULTS)} "
                             "explicitly, or remove it to sample with the declared defaults") from None
        bad = [name for name, value in chosen.items() if isinstance(value, float) and not math.isfinite(value)]
        if bad:
            raise UsageError(f"{path}: the chosen {bad[0]} is {chosen[bad[0]]}, not a finite number")
    if chosen.get("guidance", DECLARED_DEFAULTS["guidance"]) != DECLARED_DEFAULTS["guidance"] and guidable is not True:
        chosen = {}
    return {name: (chosen[name], FROM_PROBE) if name in chosen else (default, FROM_DEFAULT)
            for name, default in DECLARED_DEFAULTS.items()}


def _typed(name: str, value: Any) -> float | str:
    """A probe's or a caller's value of setting ``name`` as the declared default's type (a float or a name)."""
    if isinstance(DECLARED_DEFAULTS[name], str):
        if value not in LAYOUT_SOURCES:  # the one named setting
            raise ValueError(f"{name}: unknown {value!r}")
        return value
    return float(value)


def resolve_sampling(given: Mapping[str, float | str | None], run_dir: Path | str,
                     guidable: bool | None) -> tuple[dict[str, float | str], dict[str, str]]:
    """``given`` (a value or None per :data:`DECLARED_DEFAULTS` field) with each None replaced by the run's
    choice (:func:`run_sampling_defaults`); and each field's source. ``RUN/probe.json`` is read only when
    something is left to it, so explicit settings sample even beside a damaged one."""
    missing = [name for name in DECLARED_DEFAULTS if given.get(name) is None]
    run_choice = run_sampling_defaults(run_dir, guidable) if missing else {}
    resolved = {name: run_choice[name] if name in missing else (_typed(name, given[name]), FROM_GIVEN)
                for name in DECLARED_DEFAULTS}
    return {name: v for name, (v, _) in resolved.items()}, {name: src for name, (_, src) in resolved.items()}
