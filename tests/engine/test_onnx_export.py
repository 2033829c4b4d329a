"""ONNX export of a trained run (issue 25): the graph's detections equal mmdet's on photo shapes,
the export rides along with the run where the SDK reads it, the run's README example needs only
onnxruntime, numpy and OpenCV, and what cannot be exported is refused before anything is written."""

from __future__ import annotations

import json
import re
import shutil
import subprocess
import sys
from pathlib import Path

import cv2
import numpy as np
import pytest

from src.cli import main
from tests.helpers import RTMDET

RUN = "onnx_run"
ROOT = Path(__file__).resolve().parents[2]


@pytest.fixture(scope="module")
def trained(tmp_path_factory, mixed_project) -> dict[str, Path]:
    """RTMDet-tiny trained from scratch on photo shapes (16:9, 4:3, portrait), evaluated, exported
    to ONNX at the end of the run, speed-tested and uploaded."""
    root = tmp_path_factory.mktemp("onnx")
    code = main([
        "train", "--project", str(mixed_project), "--model", RTMDET, "--from-scratch",
        "--epochs", "6", "--batch-size", "4", "--input-size", "192", "--lr", "0.008",
        "--val-interval", "3", "--export", "onnx", "--device", "cpu",
        "--app-data", str(root / "app"), "--team-files", str(root / "tf"), "--run-id", RUN,
        "--no-cache",
    ])  # fmt: skip
    assert code == 0
    work = root / "app" / RUN
    uploaded = next((root / "tf").rglob("experiment_info.json")).parent
    return {"root": root, "work": work, "uploaded": uploaded, "project": mixed_project}


def _images(project: Path) -> list[Path]:
    return sorted(p for p in project.rglob("img/*") if p.is_file())


def _iou(a: np.ndarray, b: np.ndarray) -> np.ndarray:
    x1 = np.maximum(a[:, None, 0], b[None, :, 0])
    y1 = np.maximum(a[:, None, 1], b[None, :, 1])
    x2 = np.minimum(a[:, None, 2], b[None, :, 2])
    y2 = np.minimum(a[:, None, 3], b[None, :, 3])
    inter = np.clip(x2 - x1, 0, None) * np.clip(y2 - y1, 0, None)

    def area(z):
        return (z[:, 2] - z[:, 0]) * (z[:, 3] - z[:, 1])

    return inter / (area(a)[:, None] + area(b)[None] - inter + 1e-9)


def test_the_onnx_models_detections_equal_mmdets_on_photo_shapes(trained):
    """Per image of every shape: each of mmdet's 100 best detections is in the ONNX model's output
    with the same label, a box of IoU >= 0.99 and a score within 1e-3."""
    from mmdet.apis import inference_detector

    from src.config.text import load_config_file
    from src.engine.onnx_export import load_model
    from src.engine.onnx_runtime import OnnxDetector
    from src.runs.checkpoints import best_checkpoint

    work = trained["work"]
    onnx_file = next((work / "export").glob("*.onnx"))
    assert onnx_file.stem == best_checkpoint(work).stem
    model = load_model(load_config_file(work / "config.py"), best_checkpoint(work))
    detector = OnnxDetector(str(onnx_file))
    shapes, compared = set(), 0
    for path in _images(trained["project"]):
        image = cv2.imread(str(path))
        shapes.add(image.shape[:2])
        ref = inference_detector(model, image).pred_instances
        boxes, scores, labels = ref.bboxes.numpy(), ref.scores.numpy(), ref.labels.numpy()
        got = detector.predict([image])[0]
        top = min(100, len(scores))
        assert top > 0 and len(got.scores) >= top
        iou = _iou(boxes[:top], got.boxes)
        for i in range(top):
            same = np.flatnonzero(
                (got.labels == labels[i]) & (np.abs(got.scores - scores[i]) < 1e-3)
            )
            assert same.size and iou[i, same].max() >= 0.99, (path.name, i, scores[i])
        compared += top
    assert len({h > w for h, w in shapes}) == 2 and len(shapes) >= 3  # landscape and portrait
    assert compared >= len(_images(trained["project"]))  # every image had detections to compare


def _train_briefly(
    root: Path, project: Path, task: str, model: str, epochs: int, size: int
) -> Path:
    """A short run from scratch (parity needs the model's own numbers, not a good model)."""
    code = main([
        "train", "--project", str(project), "--task", task, "--model", model, "--from-scratch",
        "--epochs", str(epochs), "--batch-size", "2", "--input-size", str(size), "--lr", "0.002",
        "--no-evaluate", "--device", "cpu", "--app-data", str(root / "app"),
        "--team-files", str(root / "tf"), "--run-id", "run", "--no-cache",
    ])  # fmt: skip
    assert code == 0
    return root / "app" / "run"


def _assert_parity(cfg, checkpoint: Path, images: list[Path], onnx_file: Path) -> int:
    """Each of mmdet's 100 best detections per image is in the ONNX model's output (same label,
    box IoU >= 0.99, score within 1e-3), with its mask of IoU >= 0.98 where there are masks;
    returns the mask pixels compared."""
    from mmdet.apis import inference_detector

    from src.engine.onnx_export import export_onnx, load_model
    from src.engine.onnx_runtime import OnnxDetector

    detector = OnnxDetector(str(export_onnx(cfg, checkpoint, onnx_file)))
    model = load_model(cfg, checkpoint)
    mask_pixels = 0
    for path in images:
        image = cv2.imread(str(path))
        ref = inference_detector(model, image).pred_instances
        got = detector.predict([image])[0]
        boxes, scores, labels = ref.bboxes.numpy(), ref.scores.numpy(), ref.labels.numpy()
        masks = ref.masks.numpy() if "masks" in ref else None
        top = min(100, len(scores))
        assert top > 0
        iou = _iou(boxes[:top], got.boxes)
        for i in range(top):
            if len(scores) == len(got.scores) and scores[i] - scores[-1] <= 1e-3 * scores[-1]:
                continue  # a full list's last places: near-ties there may be cut either way
            same = np.flatnonzero(
                (got.labels == labels[i]) & (np.abs(got.scores - scores[i]) < 1e-3)
            )
            assert same.size and iou[i, same].max() >= 0.99, (path.name, i, scores[i])
            if masks is None:
                continue
            assert got.masks.shape[1:] == image.shape[:2]
            j = same[np.argmax(iou[i, same])]
            if masks.dtype == np.uint8:  # soft masks (mask_thr_binary < 0): probability x 255
                assert np.abs(masks[i].astype(int) - got.masks[j].astype(int)).max() <= 1
                mask_pixels += int((masks[i] > 0).sum())
                continue
            union = (masks[i] | got.masks[j]).sum()
            assert union == 0 or (masks[i] & got.masks[j]).sum() / union >= 0.98, (path.name, i)
            mask_pixels += int(masks[i].sum())
    return mask_pixels


@pytest.mark.parametrize(
    ("task", "model", "epochs", "size", "thresholds"),
    [
        # two epochs from scratch score below mmdet's 0.05 and 0.5: lowered for both, the
        # comparison needs detections and masks
        ("instance-segmentation", "rtmdet-ins_tiny_8xb32-300e_coco", 2, 160,
         {"score_thr": 0.001, "mask_thr_binary": 0.05}),
        ("object-detection", "faster-rcnn_r50_fpn_1x_coco", 1, 160, {"rcnn.score_thr": 0.0}),
        # one epoch: background wins every RoI (scores ~1e-8, so the score check says little;
        # labels and boxes still must match); the masks are compared soft (mmdet's negative
        # threshold: probability x 255), every pixel within 1
        ("instance-segmentation", "mask-rcnn_r50_fpn_1x_coco", 1, 224,
         {"rcnn.score_thr": 0.0, "rcnn.mask_thr_binary": -1.0}),
    ],
    ids=["rtmdet-ins", "faster-rcnn", "mask-rcnn"],
)  # fmt: skip
def test_the_other_architectures_equal_mmdet_on_photo_shapes(
    tmp_path, mixed_project, task, model, epochs, size, thresholds
):
    """RTMDet-Ins, Faster R-CNN and Mask R-CNN: the same parity as RTMDet's, on 6 images of every
    shape, masks included (RTMDet-Ins: the graph's logits finished by the helper, IoU >= 0.98;
    Mask R-CNN: the 28x28 probabilities pasted by the helper as mmdet does)."""
    from src.config.text import load_config_file
    from src.runs.checkpoints import last_checkpoint

    work = _train_briefly(tmp_path, mixed_project, task, model, epochs, size)
    cfg = load_config_file(work / "config.py")
    for key, value in thresholds.items():
        target = cfg.model.test_cfg
        *parents, name = key.split(".")
        for parent in parents:
            target = target[parent]
        target[name] = value
    pixels = _assert_parity(
        cfg, last_checkpoint(work), _images(mixed_project)[:6], tmp_path / "m.onnx"
    )
    assert pixels > 0 or task == "object-detection"  # masks were compared, not only empty ones


def test_the_export_is_uploaded_where_the_sdk_reads_it(trained):
    from supervisely.nn.experiments import ExperimentInfo

    uploaded = trained["uploaded"]
    info = json.loads((uploaded / "experiment_info.json").read_text())
    onnx_rel = info["export"]["ONNXRuntime"]
    assert onnx_rel.startswith("export/") and (uploaded / onnx_rel).is_file()
    assert ExperimentInfo(**info).export == {"ONNXRuntime": onnx_rel}
    classes = json.loads((uploaded / "export" / "classes.json").read_text())
    assert classes == {"0": "square", "1": "circle", "2": "triangle"}
    assert "onnxruntime" in (uploaded / "README.md").read_text()
    # the speed test: both runtimes at batch 1 and 8, in speed.json and in the report
    speed = json.loads((uploaded / "evaluation" / "speed.json").read_text())
    assert {(r["runtime"], r["batch"]) for r in speed["rows"]} == {
        (runtime, batch) for runtime in ("pytorch", "onnxruntime") for batch in (1, 8)
    }
    assert all(r["ms_per_batch"] > 0 for r in speed["rows"])
    report = (uploaded / "evaluation" / "report.html").read_text()
    assert "Speed test" in report and "onnxruntime/pytorch speed" in report


def test_the_readme_example_runs_with_onnxruntime_numpy_and_opencv_alone(trained, tmp_path):
    """The run README's program, in a fresh interpreter where torch and mmdet cannot be
    imported: it prints what the app's own ONNX runner finds, and draws it."""
    from src.engine.onnx_runtime import OnnxDetector

    uploaded = trained["uploaded"]
    readme = (uploaded / "README.md").read_text()
    program = re.search(r"```python\n(import json, sys\n.*?)```", readme, re.S).group(1)
    assert len(program.splitlines()) <= 30
    run_dir = tmp_path / "run"
    shutil.copytree(uploaded / "export", run_dir / "export")
    detector = OnnxDetector(str(next((run_dir / "export").glob("*.onnx"))))
    # the image where the model finds the most (the example prints scores >= 0.3)
    found, image = max(
        ((detector.predict([cv2.imread(str(p))], score_thr=0.3)[0], p)
         for p in _images(trained["project"])),
        key=lambda pair: len(pair[0].scores),
    )  # fmt: skip
    shutil.copy(image, tmp_path / image.name)
    (tmp_path / "example.py").write_text(program)
    blocker = "import sys; sys.modules.update(torch=None, mmdet=None, mmcv=None, mmengine=None)"
    out = subprocess.run(
        [sys.executable, "-c", f"{blocker}; import runpy; runpy.run_path('../example.py', "
         f"run_name='__main__')", str(tmp_path / image.name)],
        cwd=run_dir, capture_output=True, text=True, timeout=120,
    )  # fmt: skip
    assert out.returncode == 0, out.stderr[-2000:]
    lines = [line for line in out.stdout.splitlines() if line.strip()]
    assert len(lines) == int((found.scores >= 0.3).sum()) > 0
    assert (tmp_path / (image.name + ".pred.jpg")).is_file()


def test_cli_exports_on_demand_and_predicts_with_the_onnx_file(trained, tmp_path, capsys):
    app = str(trained["root"] / "app")
    assert main(["export", RUN, "--app-data", app]) == 0
    out = capsys.readouterr().out
    onnx_file = Path(re.search(r"onnx: (\S+)", out).group(1))
    assert onnx_file.is_file()
    image = _images(trained["project"])[0]
    code = main(["predict", "--onnx", str(onnx_file), str(image), "--out", str(tmp_path / "d"),
                 "--score-thr", "0.05"])  # fmt: skip
    assert code == 0
    out = capsys.readouterr().out
    assert re.search(rf"{re.escape(str(image))}: (square|circle|triangle) \d\.\d\d at ", out)
    assert (tmp_path / "d" / (image.stem + ".jpg")).is_file()


def test_tensorrt_without_a_gpu_says_so_and_the_onnx_file_is_written(trained, capsys):
    app = str(trained["root"] / "app")
    code = main(["export", RUN, "--format", "tensorrt", "--app-data", app])
    out = capsys.readouterr().out
    assert code == 3, out
    assert "tensorrt not exported: TensorRT needs an NVIDIA GPU" in out
    assert re.search(r"onnx: \S+\.onnx", out)


def test_a_foreign_or_unsafe_checkpoint_is_refused_with_the_reason(trained, capsys):
    import torch

    work, app = trained["work"], str(trained["root"] / "app")
    foreign = work / "foreign.pth"
    torch.save({"state_dict": {"backbone.stem.0.conv.weight": torch.zeros(1)}}, foreign)
    assert main(["export", str(foreign), "--app-data", app]) == 2
    assert "does not hold this run's model" in capsys.readouterr().err
    unsafe = work / "unsafe.pth"
    torch.save({"state_dict": {}, "meta": subprocess.CompletedProcess(["x"], 0)}, unsafe)
    assert main(["export", str(unsafe), "--app-data", app]) == 2
    assert "refusing to load it" in capsys.readouterr().err
    foreign.unlink()
    unsafe.unlink()


def test_a_model_that_cannot_be_exported_is_refused_by_name_before_anything_is_written(
    demo_project, tmp_path, capsys
):
    app = tmp_path / "app"
    code = main([
        "train", "--project", str(demo_project), "--model", "retinanet_r18_fpn_1x_coco",
        "--from-scratch", "--export", "onnx", "--app-data", str(app), "--dry-run",
    ])  # fmt: skip
    err = capsys.readouterr().err
    assert code == 2
    assert "export onnx: RetinaNet is not exported: its head (RetinaHead)" in err
    assert not any(app.glob("*/config.py"))
