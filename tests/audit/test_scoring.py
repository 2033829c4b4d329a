"""The audit's rules on hand-made boxes (src/audit/scoring.py): each kind of suspect found where
it is, and not where it is not; one error reported once; the confident score chosen from the
predictions' agreement with the labels."""

from __future__ import annotations

import numpy as np
import pytest

from src.audit.scoring import (
    LOOSE_BOX,
    MISSING,
    SPURIOUS,
    WRONG_CLASS,
    ImageBoxes,
    Thresholds,
    box_iou,
    f1_optimal_score,
    score_image,
)

THR = Thresholds(confident=0.5, low=0.1)
BOX = [10.0, 10.0, 50.0, 50.0]  # 40 x 40


def shifted(box: list[float], dx: float) -> list[float]:
    return [box[0] + dx, box[1], box[2] + dx, box[3]]


def kinds(findings) -> list[str]:
    return sorted(f.kind for f in findings)


def test_box_iou_of_hand_made_boxes():
    iou = box_iou(
        np.array([BOX]), np.array([BOX, shifted(BOX, 20), shifted(BOX, 40), [0, 0, 0, 0]])
    )
    assert iou.shape == (1, 4)
    assert iou[0, 0] == pytest.approx(1.0)
    assert iou[0, 1] == pytest.approx(20 * 40 / (2 * 1600 - 20 * 40))  # 1/3
    assert iou[0, 2] == 0.0 and iou[0, 3] == 0.0
    assert box_iou(np.zeros((0, 4)), np.array([BOX])).shape == (0, 1)


def test_a_well_labelled_object_is_no_suspect():
    image = ImageBoxes.of([BOX], [0], [shifted(BOX, 2), shifted(BOX, 3)], [0.9, 0.6], [0, 1])
    assert score_image(image, THR) == []


def test_a_confident_prediction_without_a_label_is_a_missing_object_once():
    other = [100.0, 100.0, 140.0, 140.0]
    image = ImageBoxes.of(
        [BOX], [0],
        [BOX, other, shifted(other, 2), shifted(other, 60)],
        [0.9, 0.8, 0.7, 0.3],  # the third: the same object as another class; the fourth: unsure
        [0, 2, 1, 2],
    )  # fmt: skip
    findings = score_image(image, THR)
    assert kinds(findings) == [MISSING]
    (missing,) = findings
    assert missing.box == tuple(other) and missing.predicted_class == 2
    assert missing.score == pytest.approx(0.8) and missing.label is None


def test_a_missing_object_half_under_a_label_ranks_lower():
    alone = [100.0, 100.0, 140.0, 140.0]
    under = shifted(BOX, 24)  # IoU 0.25 with the label
    image = ImageBoxes.of([BOX], [0], [BOX, alone, under], [0.9, 0.8, 0.8], [0, 1, 1])
    found = {f.box: f for f in score_image(image, THR) if f.kind == MISSING}
    assert found[tuple(alone)].score == pytest.approx(0.8)
    assert found[tuple(under)].score == pytest.approx(0.8 * 0.75)
    assert found[tuple(under)].iou == pytest.approx(0.25)


def test_no_missing_object_in_an_ignore_region():
    other = [100.0, 100.0, 140.0, 140.0]
    image = ImageBoxes.of([], [], [other], [0.9], [1], ignore=[[90, 90, 150, 150]])
    assert score_image(image, THR) == []


def test_a_label_with_nothing_there_is_spurious_ranked_by_the_best_overlap():
    far = [200.0, 200.0, 240.0, 240.0]
    image = ImageBoxes.of(
        [BOX, far], [0, 1],
        [shifted(BOX, 8), shifted(far, 1)],
        [0.05, 0.95],  # over the first only a prediction below the low score
        [2, 1],
    )  # fmt: skip
    findings = score_image(image, THR)
    assert kinds(findings) == [SPURIOUS]
    assert findings[0].label == 0 and findings[0].score == pytest.approx(0.5)  # 1 - 0.05 / 0.1
    empty = ImageBoxes.of([BOX], [0], [], [], [])
    assert score_image(empty, THR)[0].score == pytest.approx(1.0)


def test_an_overlap_under_the_overlap_iou_does_not_save_a_label():
    image = ImageBoxes.of([BOX], [0], [shifted(BOX, 25)], [0.99], [0])  # IoU 0.23
    found = {f.kind for f in score_image(image, THR)}
    assert SPURIOUS in found


def test_another_class_clearly_more_confident_over_a_label_is_a_wrong_class():
    image = ImageBoxes.of([BOX], [0], [shifted(BOX, 2), shifted(BOX, 1)], [0.85, 0.2], [1, 0])
    (finding,) = score_image(image, THR)
    assert finding.kind == WRONG_CLASS
    assert finding.labelled_class == 0 and finding.predicted_class == 1
    assert finding.score == pytest.approx(0.65)  # 0.85 - 0.2: the margin
    assert finding.box == tuple(BOX)


def test_no_wrong_class_when_the_own_class_is_nearly_as_confident_or_the_other_unsure():
    close = ImageBoxes.of([BOX], [0], [shifted(BOX, 2), shifted(BOX, 1)], [0.85, 0.75], [1, 0])
    unsure = ImageBoxes.of([BOX], [0], [shifted(BOX, 2)], [0.4], [1])
    assert score_image(close, THR) == []
    assert WRONG_CLASS not in kinds(score_image(unsure, THR))


def test_a_box_off_its_object_is_loose_and_its_prediction_no_missing_object():
    truth = shifted(BOX, 16)  # the label is 16 px off: IoU 0.43 with the object
    image = ImageBoxes.of([BOX], [0], [truth], [0.9], [0])
    (finding,) = score_image(image, THR)
    assert finding.kind == LOOSE_BOX
    assert finding.iou == pytest.approx(24 / 56)
    assert 0 < finding.score <= 0.9
    tighter = ImageBoxes.of([BOX], [0], [shifted(BOX, 10)], [0.9], [0])  # IoU 0.6: fine
    assert score_image(tighter, THR) == []


def test_a_looser_box_ranks_higher_at_the_same_confidence():
    a = score_image(ImageBoxes.of([BOX], [0], [shifted(BOX, 18)], [0.8], [0]), THR)[0]
    b = score_image(ImageBoxes.of([BOX], [0], [shifted(BOX, 12)], [0.8], [0]), THR)[0]
    assert a.kind == b.kind == LOOSE_BOX and a.score > b.score


def test_thresholds_are_checked():
    with pytest.raises(ValueError, match="confident"):
        Thresholds(confident=1.5)
    with pytest.raises(ValueError, match="overlap_iou"):
        Thresholds(overlap_iou=0.7, tight_iou=0.6)


def test_the_f1_optimal_score_separates_matches_from_false_positives():
    labels = [[i * 60.0, 0, i * 60.0 + 40, 40] for i in range(4)]
    hits = [shifted(b, 1) for b in labels]
    noise = [[i * 60.0, 200, i * 60.0 + 40, 240] for i in range(4)]
    image = ImageBoxes.of(
        labels, [0, 0, 1, 1], hits + noise,
        [0.9, 0.8, 0.7, 0.6, 0.5, 0.4, 0.3, 0.2], [0, 0, 1, 1, 0, 0, 1, 1],
    )  # fmt: skip
    assert f1_optimal_score([image]) == pytest.approx(0.6)
    wrong_class = ImageBoxes.of(labels, [0, 0, 1, 1], hits, [0.9, 0.8, 0.7, 0.6], [1, 1, 0, 0])
    assert f1_optimal_score([wrong_class], fallback=0.42) == 0.42
    assert f1_optimal_score([], fallback=0.3) == 0.3
