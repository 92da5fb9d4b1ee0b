"""The settings a benchmark trains U-Nets in, and the order it trains them (successive halving).

A setting is one way of building a U-Net's training stream: real images alone, with standard
augmentation, with copy-paste images, with generated pairs on top, or with generated pairs under a
:class:`~msgnet.evaluation.benchmark.policy.PairPolicy` (always with standard augmentation; with
copy-paste images on top as well where the policy says ``copy-paste=C``).
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Sequence

from msgnet.evaluation.benchmark.policy import PairPolicy

SETTING_KINDS = ("real", "augment", "copy-paste", "augment+copy-paste", "synthetic", "augment+synthetic",
                 "synthetic-only")
POLICY_PREFIX = "pairs:"


@dataclass(frozen=True)
class Setting:
    """One way of building a U-Net's training stream."""

    name: str
    label: str
    real: bool = True
    augment: bool = False
    added: str | None = None  # None, "copy-paste" or "synthetic"
    ratio: float | None = None
    policy: PairPolicy | None = None  # how generated pairs enter (None: on top at ``ratio``, full weight)

    def to_json(self) -> dict:
        return {"name": self.name, "label": self.label, "ratio": self.ratio, "added": self.added,
                "augment": self.augment, "real": self.real,
                "policy": None if self.policy is None else self.policy.to_json()}

    @property
    def mixing(self) -> PairPolicy:
        """The policy this setting trains with (the plain ones: on top at their ratio, full weight)."""
        return self.policy or PairPolicy(ratio=self.ratio or 1.0)


def policy_setting(policy: PairPolicy) -> Setting:
    """Real + standard augmentation (+ copy-paste, where the policy says) + generated pairs used under ``policy``."""
    extra = "copy-paste + " if policy.copy_paste is not None else ""
    return Setting(POLICY_PREFIX + policy.spec, f"real + augmentation + {extra}pairs ({policy.spec})", augment=True,
                   added="synthetic", ratio=policy.ratio if policy.mixing == "on-top" else None, policy=policy)


def _kind_setting(kind: str, r: float) -> Setting:
    return {
        "copy-paste": lambda: Setting(f"copy-paste@{r:g}", f"real + copy-paste {r:g}:1", added="copy-paste", ratio=r),
        "augment+copy-paste": lambda: Setting(f"augment+copy-paste@{r:g}", f"real + augmentation + copy-paste {r:g}:1",
                                              augment=True, added="copy-paste", ratio=r),
        "synthetic": lambda: Setting(f"synthetic@{r:g}", f"real + synthetic {r:g}:1", added="synthetic", ratio=r),
        "augment+synthetic": lambda: Setting(f"augment+synthetic@{r:g}", f"real + augmentation + synthetic {r:g}:1",
                                             augment=True, added="synthetic", ratio=r),
    }[kind]()


def make_settings(kinds: Sequence[str], ratios: Sequence[float], with_synthetic: bool,
                  policies: Sequence[PairPolicy] = ()) -> list[Setting]:
    """The settings to run, in report order; synthetic ones only when a synthetic set is given.
    ``policies`` add one setting each (real + augmentation + pairs under the policy), last."""
    out: list[Setting] = []
    for kind in SETTING_KINDS:
        if kind not in kinds or ("synthetic" in kind and not with_synthetic):
            continue
        if kind == "real":
            out.append(Setting("real", "real only (baseline)"))
        elif kind == "augment":
            out.append(Setting("augment", "real + standard augmentation", augment=True))
        elif kind == "synthetic-only":
            out.append(Setting("synthetic-only", "synthetic only (diversity)", real=False, added="synthetic"))
        else:
            out += [_kind_setting(kind, r) for r in ratios]
    if with_synthetic:
        out += [policy_setting(p) for p in policies]
    return out


def halving_order(settings: Sequence[Setting], seeds: Sequence[int], runs_of_n: dict[str, dict],
                  keep: int | None, keep_baselines: int | None = None) -> list[tuple[Setting, int]]:
    """Which (setting, seed) to train for one N, in order: the baselines, then the pair policies.

    With ``keep``, policies run the first seed only, and the ``keep`` with the best validation DICE
    there (successive halving, one round) then run the remaining seeds; ``keep_baselines`` does the
    same for the settings without pairs (None: every one runs every seed). ``runs_of_n``
    ({"setting/seed": run}) holds what is done; until a first round is, its survivors are not named.
    Only validation figures decide.
    """
    plain = [s for s in settings if s.policy is None]
    policies = [s for s in settings if s.policy is not None]
    return _halved(plain, seeds, runs_of_n, keep_baselines) + _halved(policies, seeds, runs_of_n, keep)


def _halved(group: Sequence[Setting], seeds: Sequence[int], runs_of_n: dict[str, dict],
            keep: int | None) -> list[tuple[Setting, int]]:
    if keep is None or len(group) <= keep:
        return [(s, seed) for seed in seeds for s in group]
    order = [(s, seeds[0]) for s in group]
    first = {s.name: runs_of_n.get(f"{s.name}/{seeds[0]}", {}).get("val_dice") for s in group}
    if any(v is None for v in first.values()):
        return order
    survivors = sorted(group, key=lambda s: -first[s.name])[:keep]
    return order + [(s, seed) for seed in seeds[1:] for s in survivors]
