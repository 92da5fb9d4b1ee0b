"""Choosing sampling settings: consistency and diversity together, so collapse never wins."""

from __future__ import annotations

import torch

from msgnet.evaluation.qc.set_quality import SetQuality, choose, nearest_other_distance
from msgnet.workflow.probe import candidates_for, chosen_row


def _quality(pass_rate: float, diversity: float, dice: float = 0.5) -> SetQuality:
    return SetQuality(pairs=96, pass_rate=pass_rate, dice_median=dice, found_median=0.5, rule_kept=1.0,
                      near_copy_rate=0.0, diversity=diversity, distinct_layouts=1.0)


def test_a_collapsed_setting_loses_to_a_varied_one_with_fewer_passes():
    collapsed = _quality(pass_rate=0.95, diversity=0.04, dice=0.9)  # one clean digit, again and again
    varied = _quality(pass_rate=0.40, diversity=0.95)
    assert choose([collapsed, varied]) == 1
    assert choose([varied, collapsed]) == 0
    # Diversity above real data's earns nothing more: then consistency, then pass rate decide.
    assert choose([_quality(0.3, 3.0), _quality(0.5, 1.0)]) == 1
    assert choose([_quality(0.5, 3.0, dice=0.4), _quality(0.1, 1.0, dice=0.5)]) == 1


def test_consistency_outranks_a_few_lucky_passes_and_equals_keep_the_first():
    assert choose([_quality(0.0, 1.0, dice=0.2), _quality(0.0, 1.0, dice=0.4)]) == 1
    assert choose([_quality(0.03, 1.0, dice=0.15), _quality(0.0, 1.0, dice=0.21)]) == 1
    assert choose([_quality(0.2, 1.0), _quality(0.2, 1.0)]) == 0


def test_chosen_row_reads_probe_rows():
    rows = [{**_quality(0.9, 0.01).to_json(), "guidance": 1.0}, {**_quality(0.3, 0.9).to_json(), "guidance": 2.0}]
    assert chosen_row(rows) == 1


def test_nearest_other_distance():
    assert nearest_other_distance(torch.zeros(5, 3)) == 0.0
    points = torch.tensor([[0.0, 0.0], [3.0, 0.0], [0.0, 4.0]])
    assert nearest_other_distance(points) == 3.0  # nearest others: 3, 3, 4 -> median 3
    assert nearest_other_distance(points[:1]) == 0.0


def test_candidates_are_cheapest_first_and_unguided_without_condition_dropout():
    assert {c.guidance for c in candidates_for(False)} == {1.0}
    guided = candidates_for(True)
    assert guided[0].guidance == 1.0 and {c.guidance for c in guided} >= {1.0, 2.0, 3.0}
    assert {c.layout_source for c in guided} == {"prior"}


def test_a_layout_source_left_open_is_probed_in_every_setting():
    from msgnet.workflow.probe import LAYOUT_SOURCES_PROBED

    both = candidates_for(True, LAYOUT_SOURCES_PROBED)
    one = candidates_for(True)
    assert len(both) == 2 * len(one) and LAYOUT_SOURCES_PROBED == ("prior", "prior-shapes")
    for source in LAYOUT_SOURCES_PROBED:
        assert [(c.guidance, c.temperature_codes) for c in both if c.layout_source == source] == [
            (c.guidance, c.temperature_codes) for c in one]
    assert both[0].layout_source == "prior"  # as drawn first: choose() keeps the first of equals
