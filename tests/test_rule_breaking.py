"""Paper §4.2 inputs and measure: layouts that break a rule on purpose, and what the classifier reads."""

import numpy as np
import pytest

from msgnet.cli import main
from msgnet.data.format import open_dataset
from msgnet.data.rules import rule_violations
from msgnet.layouts import layout_to_objects


@pytest.fixture(scope="module")
def pairs(tmp_path_factory):
    out = tmp_path_factory.mktemp("pairs") / "pairs"
    assert main(["data", "build", "multi-mnist", "--variant", "pairs", "--num", "24", "--seed", "1",
                 "--out", str(out)]) == 0
    return out


def test_break_rule_relabels_one_digit_per_layout_into_a_forbidden_pair(pairs, tmp_path):
    out = tmp_path / "broken"
    assert main(["data", "break-rule", str(pairs), "--out", str(out), "--seed", "2"]) == 0
    src, broken = open_dataset(pairs), open_dataset(out)
    rule = src.info.rule
    ids = src.ids("train")
    assert len(broken.ids("train")) == len(ids) and broken.info.rule is None
    anns = broken.annotations()
    for new_id, old_id in zip(broken.ids("train"), ids):
        before, after = src.read_layout(old_id), broken.read_layout(new_id)
        assert np.array_equal(before > 0, after > 0)  # the digits' shapes and places are real ones
        changed = np.unique(before[before != after])
        assert len(changed) == 1  # one object (one class) relabelled
        assert not rule_violations(rule, layout_to_objects(before))
        assert "allowed_class_sets" in rule_violations(rule, layout_to_objects(after))
        assert sorted(o.category_id for o in anns[new_id]) == sorted(o.category_id for o in layout_to_objects(after))
        assert np.array_equal(broken.read_image(new_id), src.read_image(old_id))


def test_break_rule_needs_allowed_class_sets(tmp_path, capsys):
    std = tmp_path / "std"
    assert main(["data", "build", "multi-mnist", "--num", "10", "--out", str(std)]) == 0
    capsys.readouterr()
    assert main(["data", "break-rule", str(std), "--out", str(tmp_path / "x")]) == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and "allowed_class_sets" in err[0] and not (tmp_path / "x").exists()


@pytest.mark.parametrize("reads", ["annotated", "source"])
def test_fidelity_counts_images_that_show_a_forbidden_pair(pairs, tmp_path, monkeypatch, reads):
    """The classifier's reading decides: read as annotated (the forbidden pair), every image shows a
    forbidden set; read as the real digits underneath (an allowed pair), none does."""
    from msgnet.evaluation import fidelity
    from msgnet.evaluation.digit_classifier import DigitClassifier, DigitClassifierConfig, digit_of_class

    out = tmp_path / "broken"
    assert main(["data", "break-rule", str(pairs), "--out", str(out)]) == 0
    broken, src = open_dataset(out), open_dataset(pairs)
    # The run's rule travels with generated sets; give the broken layouts back the source rule to score them.
    broken.info.rule = src.info.rule
    digit = digit_of_class(src.info.class_names)
    truth = {"annotated": [], "source": []}
    for new_id, old_id in zip(broken.ids("train"), src.ids("train")):
        after, before = broken.read_layout(new_id), src.read_layout(old_id)
        for o in broken.annotations()[new_id]:
            x, y, w, h = o.bbox
            underneath = np.bincount(before[y:y + h, x:x + w][after[y:y + h, x:x + w] == o.category_id]).argmax()
            truth["annotated"].append(digit[o.category_id])
            truth["source"].append(digit[int(underneath)])
    monkeypatch.setattr(fidelity, "classify", lambda model, cells: np.asarray(truth[reads]))
    result = fidelity.annotation_fidelity(broken, DigitClassifier(DigitClassifierConfig(channels=(4, 8), hidden=8)),
                                          progress=False, device="cpu")
    sets = result["rule_allowed_class_sets"]
    assert sets["images"] == len(src.ids("train")) and sets["annotated_broken"] == 1.0
    expected = 1.0 if reads == "annotated" else 0.0
    assert sets["read_broken"] == expected and sets["broken_as_annotated"] == expected
    assert "forbidden set" in fidelity.format_fidelity(result)
