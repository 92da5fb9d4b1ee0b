"""`msgnet eval coherency`: how often the images of a dataset break the rule its dataset.json declares
(paper §4.2). One definition of "obeys": :func:`msgnet.data.rules.rule_violations`."""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

from tqdm import tqdm

from msgnet.data.format import Dataset
from msgnet.data.rules import validate_rule, rule_violations
from msgnet.evaluation.stats import fmt_rate, wilson_interval


@dataclass
class CoherencyResult:
    """Violation rate of a dataset's declared rule, with a Wilson 95% interval and counts per rule part."""

    dataset: str
    rule: dict[str, Any] | None
    num_images: int
    num_violating: int
    by_rule: dict[str, int] = field(default_factory=dict)
    examples: dict[str, list[int]] = field(default_factory=dict)  # a few image ids per broken rule part

    @property
    def rate(self) -> float:
        return self.num_violating / self.num_images if self.num_images else float("nan")

    @property
    def interval(self) -> tuple[float, float]:
        return wilson_interval(self.num_violating, self.num_images)

    def to_json(self) -> dict[str, Any]:
        lo, hi = self.interval
        return {
            "dataset": self.dataset,
            "rule": self.rule,
            "images": self.num_images,
            "violating": self.num_violating,
            "violation_rate": self.rate,
            "ci95": [lo, hi],
            "interval": "Wilson score, 95%",
            "by_rule": {k: {"images": v, "rate": v / self.num_images} for k, v in self.by_rule.items()},
            "examples": self.examples,
        }

    def to_text(self) -> str:
        if not self.rule:
            return f"coherency {self.dataset}: dataset.json declares no rule ({self.num_images} images checked)"
        lo, hi = self.interval
        lines = [
            f"coherency {self.dataset}: {self.num_violating} of {self.num_images} images break the rule: "
            + fmt_rate(self.rate, lo, hi),
            f"rule      {self.rule.get('description') or {k: v for k, v in self.rule.items() if k != 'description'}}",
        ]
        for key, count in self.by_rule.items():
            lines.append(f"  {key:<20} {count:>7} images  {100 * count / self.num_images:6.2f}%"
                         + (f"  e.g. ids {self.examples[key][:5]}" if self.examples.get(key) else ""))
        return "\n".join(lines)


def check_coherency(dataset: Dataset, splits: list[str] | None = None, progress: bool = True,
                    max_examples: int = 10) -> CoherencyResult:
    """Check every image (of ``splits``, default all) against the dataset's rule.

    Objects come from annotations.json (for generated sets these are the layout's
    connected components); the layout itself is passed so region leaks are caught pixel-exactly.
    """
    info = dataset.info
    rule = validate_rule(info.rule, str(dataset.root / "dataset.json"))
    names = splits or list(info.splits)
    ids = [i for s in names for i in dataset.ids(s)]
    result = CoherencyResult(str(dataset.root), rule, len(ids), 0,
                             by_rule={k: 0 for k in (rule or {}) if k != "description"})
    if not rule:
        return result
    annotations = dataset.annotations()
    needs_layout = "region" in rule
    for iid in tqdm(ids, desc="coherency", unit="img", disable=not progress, leave=False):
        layout = dataset.read_layout(iid) if needs_layout else None
        broken = rule_violations(rule, annotations.get(iid, []), layout)
        if broken:
            result.num_violating += 1
        for key in broken:
            result.by_rule[key] = result.by_rule.get(key, 0) + 1
            ex = result.examples.setdefault(key, [])
            if len(ex) < max_examples:
                ex.append(iid)
    return result
