"""Predictions as Supervisely annotations (src/prelabel/labels.py) and sliced masks
(src/engine/tile_merge.py's ``predict_sliced``), on hand-made detections: no model."""

from __future__ import annotations

import numpy as np
import pytest

from src.core.errors import RequestError
from src.data.geometry import crop_to_rle
from src.prelabel.labels import CONFIDENCE_TAG, predicted_objects, prelabel_meta
from src.prelabel.model import Found, score_thresholds

CLASSES = ["car", "person"]
COLORS = {"car": [10, 20, 30], "person": [200, 100, 0]}


def _meta(**classes: str) -> dict:
    import supervisely as sly

    shapes = {"rectangle": sly.Rectangle, "polygon": sly.Polygon, "bitmap": sly.Bitmap,
              "any": sly.AnyGeometry}  # fmt: skip
    made = [sly.ObjClass(name, shapes[shape], color=[1, 2, 3]) for name, shape in classes.items()]
    return sly.ProjectMeta(obj_classes=sly.ObjClassCollection(made)).to_json()


def test_the_runs_classes_are_added_with_its_colours_and_the_projects_own_are_kept():
    import supervisely as sly

    meta = sly.ProjectMeta.from_json(prelabel_meta(_meta(car="any"), CLASSES, "bitmap", COLORS))
    assert meta.get_obj_class("car").color == [1, 2, 3]  # the project's, untouched
    person = meta.get_obj_class("person")
    assert person.color == COLORS["person"] and person.geometry_type == sly.Bitmap
    tag = meta.get_tag_meta(CONFIDENCE_TAG)
    assert tag.value_type == sly.TagValueType.ANY_NUMBER
    assert tag.applicable_to == sly.TagApplicableTo.OBJECTS_ONLY


def test_a_class_of_the_runs_name_with_another_shape_or_a_confidence_tag_of_text_is_refused():
    import supervisely as sly

    with pytest.raises(RequestError, match=r"another shape: person \(polygon\)"):
        prelabel_meta(_meta(car="rectangle", person="polygon"), CLASSES, "rectangle", COLORS)
    with pytest.raises(RequestError, match=r"car \(rectangle\)"):
        prelabel_meta(_meta(car="rectangle"), CLASSES, "bitmap", COLORS)
    meta = sly.ProjectMeta.from_json(_meta()).add_tag_meta(
        sly.TagMeta(CONFIDENCE_TAG, sly.TagValueType.ANY_STRING)
    )
    with pytest.raises(RequestError, match="tag 'confidence' of type any_string"):
        prelabel_meta(meta.to_json(), CLASSES, "rectangle", COLORS)


def test_boxes_and_masks_become_objects_the_sdk_reads_with_their_confidence():
    import supervisely as sly

    height, width = 40, 60
    mask = np.zeros((height, width), bool)
    mask[5:15, 20:50] = True
    found = Found(
        boxes=np.array([[20.0, 5.0, 50.0, 15.0], [-5.0, 30.0, 70.0, 45.0], [70, 0, 80, 10]]),
        scores=np.array([0.91234, 0.5, 0.4]),
        labels=np.array([1, 0, 0]),
    )
    meta = sly.ProjectMeta.from_json(prelabel_meta(_meta(), CLASSES, "rectangle", COLORS))
    objects = predicted_objects(found, CLASSES, height, width)
    assert len(objects) == 2  # the box outside the image is passed over
    ann = sly.Annotation.from_json(
        {"size": {"height": height, "width": width}, "objects": objects, "tags": []}, meta
    )
    first, second = ann.labels
    assert first.obj_class.name == "person" and first.tags.get(CONFIDENCE_TAG).value == 0.9123
    assert first.geometry.to_bbox().left == 20 and first.geometry.to_bbox().right == 49
    assert second.geometry.to_bbox().left == 0 and second.geometry.to_bbox().bottom == 39

    found.masks = [crop_to_rle(mask[5:15, 20:50], 20, 5, height, width)] * 3
    meta = sly.ProjectMeta.from_json(prelabel_meta(_meta(), CLASSES, "bitmap", COLORS))
    objects = predicted_objects(found, CLASSES, height, width)
    ann = sly.Annotation.from_json(
        {"size": {"height": height, "width": width}, "objects": objects, "tags": []}, meta
    )
    drawn = np.zeros((height, width), bool)
    ann.labels[0].geometry.draw(drawn, True)
    assert (drawn == mask).all() and ann.labels[0].geometry.geometry_name() == "bitmap"


def test_one_threshold_replaces_the_per_class_ones_and_a_class_without_one_gets_the_default():
    assert score_thresholds(CLASSES, {"car": 0.2}, None).tolist() == [0.2, 0.3]
    assert score_thresholds(CLASSES, {"car": 0.2}, 0.6).tolist() == [0.6, 0.6]
    assert score_thresholds(CLASSES, None, None).tolist() == [0.3, 0.3]


def test_sliced_prediction_carries_each_tiles_masks_into_the_image():
    """A detect that gives masks: each tile's mask lands at its tile's place in the merged
    result (RLE at the image's size)."""
    from pycocotools import mask as mask_utils

    from src.engine.tile_merge import predict_sliced

    image = np.zeros((64, 128, 3), np.uint8)
    image[20:40, 70:100] = 255  # one object in the second tile (x from 64)

    def detect(crops: list[np.ndarray]) -> list[tuple]:
        out = []
        for crop in crops:
            on = crop[:, :, 0] > 0
            ys, xs = np.nonzero(on)
            if not len(ys):
                out.append((np.zeros((0, 4)), np.zeros(0), np.zeros(0, int), []))
                continue
            box = [[xs.min(), ys.min(), xs.max() + 1, ys.max() + 1]]
            out.append((np.array(box, float), np.array([0.9]), np.array([0]), [on]))
        return out

    merged = predict_sliced(detect, image, size=64, overlap=0.0, full_image=False)
    assert len(merged.scores) == 1 and merged.masks is not None
    assert merged.boxes[0].tolist() == [70, 20, 100, 40]
    assert (mask_utils.decode(merged.masks[0]).astype(bool) == (image[:, :, 0] > 0)).all()
