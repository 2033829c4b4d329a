"""The evaluation report: one self-contained HTML file a person can read, offline too.

Everything is inside the file: plots are matplotlib PNGs and the gallery's pictures JPEGs, both as
``data:`` URIs; no script, no stylesheet or font from a CDN. Sections: the key metrics, per-class
AP, precision-recall curves, the confusion matrix, calibration, and a gallery of validation
images with ground truth beside the predictions, the worst images first (lowest F1 at the SDK's
F1-optimal confidence threshold, then most errors).

The numbers come from the SDK's ``MetricProvider`` (``supervisely.nn.benchmark``); this module only
draws them.
"""

from __future__ import annotations

import base64
import html
import io
from pathlib import Path
from typing import Any

import cv2
import numpy as np

from src.core.layout import CLASS_THRESHOLDS

GALLERY_SIZE = 12  # images in the gallery
PANEL_SIDE = 480  # px: the longer side of each gallery picture
KEY_METRICS = (
    ("mAP", "mAP (IoU 0.50:0.95)"),
    ("AP50", "AP50"),
    ("AP75", "AP75"),
    ("precision", "Precision"),
    ("recall", "Recall"),
    ("f1", "F1"),
    ("iou", "Avg. IoU of matches"),
    ("classification_accuracy", "Classification accuracy"),
    ("calibration_score", "Calibration score"),
    ("f1_optimal_conf", "F1-optimal confidence"),
)
GT_COLOR, PRED_COLOR = (40, 200, 40), (230, 60, 40)  # RGB

_STYLE = """
body{font-family:sans-serif;margin:24px;color:#222;max-width:1200px}
h1{font-size:22px}h2{font-size:18px;margin-top:32px;border-bottom:1px solid #ddd}
table{border-collapse:collapse}td,th{border:1px solid #ccc;padding:4px 10px;text-align:left}
td.n{text-align:right;font-variant-numeric:tabular-nums}
.pair{display:flex;gap:8px;margin:8px 0 20px}.pair figure{margin:0}
figcaption{font-size:13px;color:#555}.note{color:#555;font-size:14px}
"""


def _png(fig: Any) -> str:
    import matplotlib.pyplot as plt

    buffer = io.BytesIO()
    fig.savefig(buffer, format="png", dpi=100, bbox_inches="tight")
    plt.close(fig)
    return "data:image/png;base64," + base64.b64encode(buffer.getvalue()).decode()


def _figure(width: float = 7, height: float = 4) -> tuple[Any, Any]:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    return plt.subplots(figsize=(width, height))


def _per_class_plot(per_class: dict[str, float]) -> str:
    fig, ax = _figure(7, max(2.0, 0.4 * len(per_class) + 1))
    names = list(per_class)
    ax.barh(names, [per_class[n] or 0.0 for n in names], color="#4a7bd0")
    ax.set_xlim(0, 1)
    ax.set_xlabel("AP (IoU 0.50:0.95)")
    ax.invert_yaxis()
    return _png(fig)


def _pr_plot(mp: Any) -> str:
    curves = np.asarray(mp.pr_curve())  # (101 recall thresholds, classes); -1: no ground truth
    recall = np.linspace(0, 1, curves.shape[0])
    fig, ax = _figure()
    for k, name in enumerate(mp.cat_names):
        curve = np.where(curves[:, k] < 0, np.nan, curves[:, k])
        ax.plot(recall, curve, linewidth=1, label=name)
    valid = np.where(curves < 0, np.nan, curves)
    with np.errstate(all="ignore"):
        ax.plot(recall, np.nanmean(valid, axis=1), "k--", linewidth=2, label="mean")
    ax.set(xlabel="Recall", ylabel="Precision", xlim=(0, 1), ylim=(0, 1.02))
    ax.legend(fontsize=8, loc="lower left")
    return _png(fig)


def _confusion_plot(mp: Any) -> str:
    matrix = np.asarray(mp.confusion_matrix())  # rows: predicted, columns: ground truth
    labels = [*mp.cat_names, "(none)"]
    side = max(4.0, 0.6 * len(labels) + 2)
    fig, ax = _figure(side, side)
    ax.imshow(np.log1p(matrix), cmap="Blues")
    ax.set_xticks(range(len(labels)), labels, rotation=45, ha="right")
    ax.set_yticks(range(len(labels)), labels)
    ax.set(xlabel="Ground truth", ylabel="Predicted")
    for (i, j), value in np.ndenumerate(matrix):
        ax.text(j, i, str(value), ha="center", va="center", fontsize=8)
    return _png(fig)


def _calibration_plot(mp: Any) -> str:
    true_probs, pred_probs = mp.m_full.calibration_curve()
    fig, ax = _figure(5, 4)
    ax.plot([0, 1], [0, 1], "k:", label="perfectly calibrated")
    ax.plot(pred_probs, true_probs, "o-", label="model")
    ax.set(xlabel="Confidence", ylabel="Fraction of true positives", xlim=(0, 1), ylim=(0, 1))
    ax.legend(fontsize=8)
    return _png(fig)


def draw(image: np.ndarray, detections: list[dict], color: tuple[int, int, int]) -> np.ndarray:
    from pycocotools import mask as mask_utils

    out = image.copy()
    for det in detections:
        segmentation = det.get("segmentation")
        if segmentation is not None:
            rle = dict(segmentation)
            if isinstance(rle.get("counts"), str):
                rle["counts"] = rle["counts"].encode()
            mask = mask_utils.decode(rle).astype(bool)
            out[mask] = (0.5 * out[mask] + 0.5 * np.array(color)).astype(np.uint8)
        x, y, w, h = (round(v) for v in det["bbox"])
        cv2.rectangle(out, (x, y), (x + max(w, 1) - 1, y + max(h, 1) - 1), color, 2)
        if "label" in det:
            cv2.putText(out, det["label"], (x, max(12, y - 3)), cv2.FONT_HERSHEY_SIMPLEX, 0.45,
                        color, 1, cv2.LINE_AA)  # fmt: skip
    return out


def truth(info: dict, classes: list[str], with_masks: bool = True) -> list[dict]:
    """A data-list item's ground truth in the drawing's format (COCO boxes, class labels)."""
    return [
        {"bbox": [x1, y1, x2 - x1, y2 - y1], "label": classes[inst["bbox_label"]]}
        | ({"segmentation": inst.get("mask")} if with_masks else {})
        for inst in info["instances"]
        for x1, y1, x2, y2 in [inst["bbox"]]
    ]


def jpeg_data_url(image: np.ndarray, side: int = PANEL_SIDE) -> str:
    scale = side / max(image.shape[:2])
    if scale < 1:
        image = cv2.resize(image, None, fx=scale, fy=scale, interpolation=cv2.INTER_AREA)
    ok, data = cv2.imencode(
        ".jpg", cv2.cvtColor(image, cv2.COLOR_RGB2BGR), [cv2.IMWRITE_JPEG_QUALITY, 80]
    )
    if not ok:
        raise ValueError("cannot encode a gallery image")
    return "data:image/jpeg;base64," + base64.b64encode(data.tobytes()).decode()


def _gallery(mp: Any, data_list: list[dict], predictions: list[dict], classes: list[str]) -> str:
    """GT beside predictions (at the F1-optimal confidence), the worst images first."""
    table = mp.prediction_table()  # per image: TP, FP, FN, F1; "Sly ID" is our image id
    table = table.assign(errors=table["FP"] + table["FN"], f1=table["F1"].fillna(1.0))
    worst = table.sort_values(["f1", "errors"], ascending=[True, False]).head(GALLERY_SIZE)
    infos = {info["img_id"]: info for info in data_list}
    threshold = float(mp.conf_threshold)
    by_image: dict[int, list[dict]] = {}
    for det in predictions:
        if det["score"] >= threshold:
            label = f"{classes[det['category_id'] - 1]} {det['score']:.2f}"
            by_image.setdefault(det["image_id"], []).append(det | {"label": label})
    parts = []
    for _, row in worst.iterrows():
        info = infos[int(row["Sly ID"])]
        image = cv2.imread(info["img_path"], cv2.IMREAD_COLOR)
        if image is None:
            continue
        image = cv2.cvtColor(image, cv2.COLOR_BGR2RGB)
        caption = (f"{html.escape(info['item_name'])}: TP {int(row['TP'])}, FP {int(row['FP'])}, "
                   f"FN {int(row['FN'])}")  # fmt: skip
        ground = jpeg_data_url(draw(image, truth(info, classes), GT_COLOR))
        found = jpeg_data_url(draw(image, by_image.get(info["img_id"], []), PRED_COLOR))
        parts.append(
            f'<p>{caption}</p><div class="pair">'
            f'<figure><img alt="ground truth" src="{ground}">'
            "<figcaption>ground truth</figcaption></figure>"
            f'<figure><img alt="predictions" src="{found}">'
            f"<figcaption>predictions (confidence ≥ {threshold:.2f})</figcaption></figure></div>"
        )
    return "".join(parts) or "<p>No validation images.</p>"


def _metrics_table(metrics: dict[str, Any]) -> str:
    rows = "".join(
        f"<tr><th>{label}</th><td class='n'>{_fmt(metrics.get(key))}</td></tr>"
        for key, label in KEY_METRICS
        if key in metrics
    )
    return f"<table>{rows}</table>"


def _fmt(value: Any) -> str:
    return "–" if value is None else f"{value:.4f}" if isinstance(value, float) else str(value)


_NO_MATCH = (
    "<p class='note'>No prediction matches an object at IoU ≥ 0.5: the SDK's evaluator has no "
    "curve, matrix or calibration to show. Train longer, or check the classes and the input "
    "size.</p>"
)


def _analysis(mp: Any, data_list: list[dict], predictions: list[dict], classes: list[str]) -> str:
    """The sections drawn from the SDK's matches (none when no prediction matched)."""
    sections = [("pr", "Precision-recall curves"), ("confusion", "Confusion matrix"),
                ("calibration", "Calibration"), ("gallery", "Images, worst first")]  # fmt: skip
    if not hasattr(mp, "pr_curve"):
        return "".join(f'<h2 id="{key}">{title}</h2>{_NO_MATCH}' for key, title in sections)
    return f"""<h2 id="pr">Precision-recall curves</h2>
<img alt="precision-recall curves" src="{_pr_plot(mp)}">
<h2 id="confusion">Confusion matrix</h2>
<p class="note">At the F1-optimal confidence; "(none)": a missed object (column) or a prediction
that matches nothing (row).</p>
<img alt="confusion matrix" src="{_confusion_plot(mp)}">
<h2 id="calibration">Calibration</h2>
<p class="note">Expected calibration error {_fmt(float(mp.expected_calibration_error()))},
maximum {_fmt(float(mp.maximum_calibration_error()))}.</p>
<img alt="calibration" src="{_calibration_plot(mp)}">
<h2 id="gallery">Images, worst first</h2>
{_gallery(mp, data_list, predictions, classes)}
"""


def _thresholds_section(chosen: dict[str, Any] | None) -> str:
    """Each class's score threshold (``src.evaluation.class_thresholds``) beside the SDK's one for
    the whole model: precision, recall and F1 of the class at each (IoU 0.50:0.95 averaged, as the
    SDK's score profile)."""
    if not chosen:
        return ""
    shared = chosen["global_threshold"]
    head = ("<tr><th>Class</th><th>Objects</th><th>Threshold</th><th>Precision</th><th>Recall</th>"
            f"<th>F1</th><th>Precision at {shared:.3f}</th><th>Recall at {shared:.3f}</th>"
            f"<th>F1 at {shared:.3f}</th></tr>")  # fmt: skip
    rows = []
    for name, c in chosen["classes"].items():
        own = _fmt(c["threshold"]) + ("" if c["source"] == "class" else " (global: no match)")
        at = c["at_global"]
        cells = [c["ground_truth"], own, c["precision"], c["recall"], c["f1"],
                 at["precision"], at["recall"], at["f1"]]  # fmt: skip
        numbers = "".join(f"<td class='n'>{_fmt(v)}</td>" for v in cells)
        rows.append(f"<tr><td>{html.escape(name)}</td>{numbers}</tr>")
    return f"""<h2 id="thresholds">Score thresholds per class</h2>
<p class="note">Each class's F1-optimal score threshold on this split, from the SDK's own matches
and score profile restricted to the class, against the SDK's one threshold for every class
({shared:.3f}). A class none of whose predictions matches an object keeps that one. They travel
with the checkpoint, the ONNX file and experiment_info.json; the platform's serving app takes one
threshold for every class.</p>
<table>{head}{"".join(rows)}</table>
"""


def write_report(
    summary: dict[str, Any],
    mp: Any,
    data_list: list[dict],
    predictions: list[dict],
    classes: list[str],
    title: str,
) -> str:
    """The report as HTML text. ``summary``: checkpoint, metrics, per_class_ap, notes."""
    per_class = summary["per_class_ap"]
    class_rows = "".join(
        f"<tr><td>{html.escape(name)}</td><td class='n'>{_fmt(ap)}</td></tr>"
        for name, ap in per_class.items()
    )
    notes = "".join(f"<p class='note'>{html.escape(n)}</p>" for n in summary.get("notes", []))
    return f"""<!doctype html>
<html lang="en"><head><meta charset="utf-8"><title>{html.escape(title)}</title>
<style>{_STYLE}</style></head><body>
<h1>{html.escape(title)}</h1>
<p>Checkpoint <b>{html.escape(summary["checkpoint"])}</b> on the {html.escape(summary["split"])}
split ({len(data_list)} images), metrics by the Supervisely SDK's Model Benchmark evaluator.</p>
{notes}
<h2 id="metrics">Key metrics</h2>{_metrics_table(summary["metrics"])}
<h2 id="per-class">Per-class AP</h2>
<img alt="per-class AP" src="{_per_class_plot(per_class)}"><table>{class_rows}</table>
{_thresholds_section(summary.get(CLASS_THRESHOLDS))}
{_analysis(mp, data_list, predictions, classes)}
</body></html>
"""


def add_section(report: Path, title: str, lines: list[str]) -> None:
    """Append a section of plain lines to a written report (the speed test after an export)."""
    text = report.read_text(encoding="utf-8")
    body = "".join(f"<p>{html.escape(line)}</p>" for line in lines)
    section = f"<h2 id='{html.escape(title.lower().replace(' ', '-'))}'>{html.escape(title)}</h2>"
    report.write_text(text.replace("</body>", section + body + "\n</body>", 1), encoding="utf-8")
