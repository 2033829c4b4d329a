"""Images of any size and aspect ratio reach the model in shapes it can take.

Regression for a crash seen on ordinary photos: RTMDet-tiny on 1920x1080 images at 320 px failed at
the first validation (``Sizes of tensors must match ... 24 but got 23``) because the composed
pipelines had lost the zoo config's stride-aligned padding.
"""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest

from src.config import zoo
from src.config.augmentations import preset_text
from src.config.compose import compose_from_zoo
from src.config.input_shapes import padding_problems, required_divisor
from src.config.params import AUGMENTATIONS, DatasetSpec, RunSpec, TrainParams
from src.config.text import config_to_text, parse_config_text
from tests.helpers import ALL_DEFAULTS

ROOT = Path(__file__).resolve().parents[2]
CLASSES = ("square", "circle", "triangle")
RTMDET = "rtmdet_tiny_8xb32-300e_coco"


@pytest.fixture(scope="module")
def real_project(tmp_path_factory) -> Path:
    from src.data.demo import make_real_world_project

    return make_real_world_project(tmp_path_factory.mktemp("real") / "project", seed=5)


def _compose(entry, tmp_path, **overrides):
    params = TrainParams(task=entry.task, classes=CLASSES, weights="scratch", **overrides)
    data = DatasetSpec(project_dir=str(tmp_path / "project"))
    return compose_from_zoo(entry, params, data, RunSpec(work_dir=str(tmp_path / "run")))


@pytest.mark.parametrize("entry", ALL_DEFAULTS)
def test_every_default_model_pads_every_batch_to_its_stride(entry, tmp_path):
    if entry.missing_packages():  # its config imports them (ConvNeXt: mmpretrain)
        pytest.skip(f"{entry.architecture} needs {entry.missing_packages()} (Docker image only)")
    cfg = _compose(entry, tmp_path, input_size=(333, 250))  # sides that are no multiple of 32
    preprocessor = cfg.model.data_preprocessor
    need = required_divisor(cfg.model)
    assert preprocessor.pad_size_divisor % need == 0, (need, preprocessor)
    if entry.task == "instance-segmentation" and need > 1:
        assert preprocessor.pad_mask is True  # masks padded with their images
    assert padding_problems(cfg) == []
    # the text the Editor shows and the serving app loads keeps it
    assert padding_problems(parse_config_text(config_to_text(cfg))) == []


@pytest.mark.parametrize("preset", AUGMENTATIONS)
def test_every_augmentation_preset_keeps_the_padding(preset, tmp_path):
    # custom: the heaviest preset's transforms, as a user starts from them
    custom = dict(augmentation_pipeline=preset_text("heavy")) if preset == "custom" else {}
    for model in (RTMDET, "ssd300_coco"):
        cfg = _compose(
            zoo.get_model(model), tmp_path, augmentation=preset, input_size=(320, 320), **custom
        )
        assert padding_problems(cfg) == [], (model, preset)


def test_fixed_size_models_resize_exactly_and_pad_back_after_crops(tmp_path):
    """SSD's last layers need its full input size on both sides: no keep-ratio resize there."""
    cfg = _compose(
        zoo.get_model("ssd300_coco"), tmp_path, input_size=(320, 320), augmentation="heavy"
    )
    resize = [t for t in cfg.train_pipeline if t["type"] == "Resize"]
    assert resize and resize[0]["keep_ratio"] is False
    assert cfg.train_pipeline[-3] == dict(
        type="Pad", size=(320, 320), pad_val=dict(img=(114, 114, 114))
    )
    rtm = _compose(zoo.get_model(RTMDET), tmp_path, input_size=(320, 320))
    assert next(t for t in rtm.test_pipeline if t["type"] == "Resize")["keep_ratio"] is True


def test_required_divisor_follows_the_model_family():
    from mmengine.config import Config

    def model_of(name):
        return Config.fromfile(str(zoo.get_model(name).config_path)).model

    assert required_divisor(model_of(RTMDET)) == 32
    assert required_divisor(model_of("detr_r50_8xb2-150e_coco")) == 1  # masks its padding
    assert required_divisor(dict(type="RetinaNet", neck=dict(type="NASFPN"))) == 128


def test_an_edit_that_drops_the_padding_is_warned_with_what_to_set(tmp_path):
    cfg = _compose(zoo.get_model(RTMDET), tmp_path)
    text = config_to_text(cfg).replace("pad_size_divisor=32", "pad_size_divisor=1")
    problems = padding_problems(parse_config_text(text))
    assert [p.split(":")[0] for p in problems] == [
        "train_dataloader",
        "val_dataloader",
        "test_dataloader",
    ]
    assert "pad_size_divisor=32" in problems[0] and "multiples of 1 px" in problems[0]
    # the user's own Pad steps are as good
    edited = parse_config_text(text)
    for loader in ("train_dataloader", "val_dataloader", "test_dataloader"):
        pipeline = edited[loader]["dataset"]["pipeline"]
        pipeline.insert(-1, dict(type="Pad", size_divisor=32))
    assert padding_problems(edited) == []


def test_real_world_project_has_what_users_have(real_project):
    import cv2

    from src.data.reader import list_items

    items = list_items(real_project)
    datasets = {name.rsplit("/", 1)[0] for name, _ in items}
    assert "photos/phone" in datasets  # nested
    sizes, exts = set(), set()
    for name, ann_path in items:
        ann = json.loads(ann_path.read_text())
        w, h = ann["size"]["width"], ann["size"]["height"]
        sizes.add((w, h))
        img = ann_path.parent.parent / "img" / name.rsplit("/", 1)[1]
        exts.add(img.suffix)
        decoded = cv2.imread(str(img), cv2.IMREAD_COLOR)  # as mmdet's loader decodes it
        assert decoded.shape == (h, w, 3), (name, decoded.shape)
    assert {(1920, 1080), (1280, 960), (720, 1280), (48, 40)} <= sizes
    assert max(max(s) for s in sizes) >= 1920 and min(min(s) for s in sizes) < 64
    assert exts == {".png", ".jpg"}


def test_exif_rotated_jpeg_is_read_in_the_annotations_frame(real_project):
    """The phone portrait is stored landscape with EXIF orientation 6; mmdet's loader turns it
    upright, so its objects are where the annotation says (their class color inside the box)."""
    from PIL import Image

    from src.data.reader import read_instances

    data, _ = read_instances(real_project, list(CLASSES), "object-detection", ["photos/phone"])
    portrait = next(d for d in data if d["img_path"].endswith(".jpg"))
    with Image.open(portrait["img_path"]) as raw:
        assert raw.getexif().get(0x0112) == 6 and raw.size == (1280, 720)  # stored rotated
    from mmcv.transforms import LoadImageFromFile

    loaded = LoadImageFromFile()(dict(img_path=portrait["img_path"]))
    assert loaded["img"].shape[:2] == (portrait["height"], portrait["width"]) == (1280, 720)
    colors = {"square": (230, 60, 60), "circle": (60, 200, 60), "triangle": (60, 90, 230)}
    for instance in portrait["instances"]:
        x1, y1, x2, y2 = (round(v) for v in instance["bbox"])
        cx, cy = (x1 + x2) // 2, (y1 + y2) // 2
        bgr = loaded["img"][cy, cx].astype(int)
        rgb = np.array(colors[CLASSES[instance["bbox_label"]]])
        assert np.abs(bgr[::-1] - rgb).max() < 60, (instance, bgr)


def _cli(*args, cwd=ROOT):
    return subprocess.run(
        [sys.executable, "-m", "src.cli", *args], capture_output=True, text=True, cwd=cwd,
        timeout=600,
    )  # fmt: skip


def test_dry_run_prints_padded_shapes_of_the_extreme_images(real_project, tmp_path):
    dump = tmp_path / "cfg.py"
    result = _cli(
        "train", "--project", str(real_project), "--model", RTMDET, "--from-scratch",
        "--input-size", "320", "--dry-run", "--dump-config", str(dump),
        "--app-data", str(tmp_path / "app_data"), "--no-cache",
    )  # fmt: skip
    assert result.returncode == 0, result.stderr
    lines = [line for line in result.stdout.splitlines() if " -> padded " in line]
    assert len(lines) >= 4, result.stdout
    assert any("720x1280 -> 180x320 -> padded 192x320" in line for line in lines), lines
    assert any("1000x180 -> 320x58 -> padded 320x64" in line for line in lines), lines
    assert any("48x40 -> 320x267 -> padded 320x288" in line for line in lines), lines
    for line in lines:
        padded = line.split("padded ")[1].split(":")[0]
        w, h = (int(v) for v in padded.split("x"))
        assert w % 32 == 0 and h % 32 == 0, line
    assert "warning" not in result.stdout

    # the same config edited back to the crash: the dry run names the image it cannot take
    dump.write_text(dump.read_text().replace("pad_size_divisor=32", "pad_size_divisor=1"))
    result = _cli(
        "train", "--project", str(real_project), "--config", str(dump), "--dry-run",
        "--app-data", str(tmp_path / "app_data"), "--no-cache",
    )  # fmt: skip
    assert result.returncode == 2, result.stdout
    assert "images reach the model padded to multiples of 1 px" in result.stderr
    assert "pad_size_divisor=32" in result.stderr  # what to set
    assert "the model cannot take val image" in result.stderr
    assert "Sizes of tensors must match" in result.stderr
    assert "photos/" in result.stderr or "misc/" in result.stderr  # the image is named


def test_demo_project_is_reused_regenerated_or_refused(tmp_path):
    from src.data.demo import DEMO_MARKER, DemoOptions, make_demo_project

    target = tmp_path / "demo"
    make_demo_project(target, DemoOptions(images=4, seed=1, mixed_sizes=True))
    first = sorted(p.name for p in (target / "train" / "img").iterdir())
    stamp = (target / DEMO_MARKER).stat().st_mtime_ns
    make_demo_project(target, DemoOptions(images=4, seed=1, mixed_sizes=True))  # reused
    assert (target / DEMO_MARKER).stat().st_mtime_ns == stamp
    make_demo_project(target, DemoOptions(images=8, seed=1, mixed_sizes=True))  # regenerated
    assert len(list((target / "train" / "img").iterdir())) == 6 != len(first)
    other = tmp_path / "mine"
    other.mkdir()
    (other / "notes.txt").write_text("my data")
    with pytest.raises(FileExistsError, match="not a generated demo project"):
        make_demo_project(other, DemoOptions(images=4))
    assert (other / "notes.txt").read_text() == "my data"


def test_centernet_validates_at_the_input_size_and_maps_boxes_back(real_project, tmp_path):
    """CenterNet/CornerNet keep their own test padding (the heads read its border); their zoo
    pipelines test at the original size, which the app resizes to the input size first."""
    from mmcv.transforms import Compose
    from mmengine.registry import init_default_scope

    init_default_scope("mmdet")
    cfg = _compose(
        zoo.get_model("centernet_r18_8xb16-crop512-140e_coco"), tmp_path, input_size=(160, 160)
    )
    photo = next(real_project.rglob("*1920x1080*.jpg"))
    sample = Compose(cfg.test_pipeline)(dict(img_path=str(photo), img_id=0, instances=[]))
    meta = sample["data_samples"].metainfo
    assert meta["ori_shape"] == (1080, 1920)
    assert max(meta["img_shape"]) <= 192 and "border" in meta  # its own padding kept
    assert meta["scale_factor"] == pytest.approx((160 / 1920, 90 / 1080), rel=0.01)
