"""The audit's report: one self-contained HTML file, the most suspicious labels first, each with a
crop of its image (the label in green, the model's box in red) as an inline JPEG, as the
evaluation report embeds its pictures (``src.runs.report``): no script, nothing from a CDN.
"""

from __future__ import annotations

import html
from pathlib import Path
from typing import Any

import cv2
import numpy as np

from src.audit.scoring import KINDS, LOOSE_BOX, MISSING, SPURIOUS, WRONG_CLASS
from src.audit.suspects import Suspect, counts
from src.runs.report import GT_COLOR, PRED_COLOR, jpeg_data_url

TOP = 100  # suspects shown with a crop
CROP_SIDE = 220  # px: the longer side of a crop as shown
WHAT = {
    MISSING: "an object the model finds confidently, with no label",
    SPURIOUS: "a label where the model sees nothing",
    WRONG_CLASS: "the model is clearly more confident of another class here",
    LOOSE_BOX: "the model places this object elsewhere: the box fits it loosely",
}
_STYLE = """
body{font-family:sans-serif;margin:24px;color:#222;max-width:1200px}
h1{font-size:22px}h2{font-size:18px;margin-top:32px;border-bottom:1px solid #ddd}
table{border-collapse:collapse}td,th{border:1px solid #ccc;padding:4px 10px;text-align:left;
vertical-align:top}td.n{text-align:right;font-variant-numeric:tabular-nums}
.note{color:#555;font-size:14px}
"""


def crop(image: np.ndarray, suspect: Suspect) -> np.ndarray:
    """The region around the suspect's boxes (their size again on each side, 16 px at least),
    scaled so its longer side is ``CROP_SIDE``, the label's box green and the model's red."""
    boxes = [b for b in (suspect.box, suspect.prediction_box) if b is not None]
    x1, y1 = min(b[0] for b in boxes), min(b[1] for b in boxes)
    x2, y2 = max(b[2] for b in boxes), max(b[3] for b in boxes)
    pad = max(16.0, x2 - x1, y2 - y1) * 0.75
    height, width = image.shape[:2]
    left, top = int(max(0, x1 - pad)), int(max(0, y1 - pad))
    right, bottom = int(min(width, x2 + pad)), int(min(height, y2 + pad))
    piece = image[top : max(bottom, top + 1), left : max(right, left + 1)]
    scale = CROP_SIDE / max(piece.shape[:2])
    piece = cv2.resize(piece, None, fx=scale, fy=scale, interpolation=cv2.INTER_LINEAR)
    drawn = [(suspect.prediction_box, PRED_COLOR)]
    if suspect.kind != MISSING:
        drawn.append((suspect.box, GT_COLOR))
    for box, color in drawn:
        if box is not None:
            corners = [(box[0] - left) * scale, (box[1] - top) * scale]
            corners += [(box[2] - left) * scale, (box[3] - top) * scale]
            a, b, c, d = (round(v) for v in corners)
            cv2.rectangle(piece, (a, b), (max(a, c - 1), max(b, d - 1)), color, 2)
    return piece


def _row(rank: int, suspect: Suspect, project_dir: Path) -> str:
    image = cv2.imread(str(project_dir / suspect.image), cv2.IMREAD_COLOR)
    if image is None:
        picture = "(image not readable)"
    else:
        rgb = cv2.cvtColor(image, cv2.COLOR_BGR2RGB)
        picture = f'<img alt="{suspect.kind}" src="{jpeg_data_url(crop(rgb, suspect), CROP_SIDE)}">'
    labelled = html.escape(suspect.labelled_class or "–")
    predicted = html.escape(suspect.predicted_class or "–")
    iou = "" if suspect.iou is None else f", IoU {suspect.iou:.2f}"
    confidence = "" if suspect.prediction_score is None else f" ({suspect.prediction_score:.2f})"
    box = ", ".join(f"{v:.0f}" for v in suspect.box)
    return (
        f"<tr><td class='n'>{rank}</td><td>{picture}</td><td><b>{suspect.kind}</b><br>"
        f"<span class='note'>{WHAT[suspect.kind]}</span></td><td class='n'>{suspect.score:.3f}"
        f"</td><td>{html.escape(suspect.image)}<br>box [{box}]<br>fold {suspect.fold}</td>"
        f"<td>label: {labelled}<br>model: {predicted}{confidence}{iou}</td></tr>"
    )


def write_report(
    path: Path,
    project_dir: str | Path,
    suspects: list[Suspect],
    summary: dict[str, Any],
    curve: dict[str, Any] | None = None,
) -> None:
    """The report of ``suspects`` (ranked) at ``path``: the counts, the folds, the learning
    curve where the audit made one (``learning_curve.json``), and the top ``TOP`` with their
    crops."""
    project = Path(project_dir)
    found = counts(suspects)
    count_rows = "".join(
        f"<tr><td>{kind}</td><td class='n'>{found[kind]}</td><td>{WHAT[kind]}</td></tr>"
        for kind in KINDS
    )
    fold_rows = "".join(
        f"<tr><td class='n'>{f['fold']}</td><td>{html.escape(f['run'])}</td>"
        f"<td class='n'>{f['images']}</td><td class='n'>{f['confident']:.3f}</td>"
        f"<td>{html.escape(_metrics(f.get('validation')))}</td></tr>"
        for f in summary.get("folds", [])
    )
    rows = "".join(_row(n, s, project) for n, s in enumerate(suspects[:TOP], 1))
    title = f"Label audit {summary.get('audit_id', '')} of {project.name}"
    path.write_text(
        f"""<!doctype html>
<html lang="en"><head><meta charset="utf-8"><title>{html.escape(title)}</title>
<style>{_STYLE}</style></head><body>
<h1>{html.escape(title)}</h1>
<p>{len(suspects)} suspects in {summary.get("images", 0)} images. Each image was predicted by a
model that did not train on it ({len(summary.get("folds", []))} folds of
{html.escape(str(summary.get("model", "")))}). These are suggestions to review: a person
decides. Every suspect is in <code>suspects.json</code> and tagged <code>label_suspect</code> in
the project's copy.</p>
<h2>Suspects by kind</h2><table>{count_rows}</table>
<h2>Folds</h2><table><tr><th>fold</th><th>run</th><th>images</th><th>confident from</th>
<th>validation</th></tr>{fold_rows}</table>
{curve_section(curve) if curve else ""}
<h2>The {min(TOP, len(suspects))} most suspicious</h2>
<p class="note">Green: the label; red: the model's box.</p>
<table><tr><th>#</th><th>crop</th><th>kind</th><th>score</th><th>where</th><th>classes</th></tr>
{rows}</table>
</body></html>
""",
        encoding="utf-8",
    )


def _metrics(metrics: dict[str, float] | None) -> str:
    if not metrics:
        return "–"
    return "  ".join(f"{k} {v:.3f}" for k, v in metrics.items())


def curve_section(curve: dict[str, Any]) -> str:
    """The learning curve's table: per class the instances and AP of each run, and the AP the
    fit expects from twice the instances, with its standard error."""
    shares = [r["share"] for r in curve["runs"]]
    head = "".join(f"<th>{s} %: objects, AP</th>" for s in shares)
    rows = []
    for c in curve["classes"]:
        at = {s: (n, ap) for s, n, ap in zip(c["shares"], c["instances"], c["ap"], strict=True)}
        points = "".join(
            f"<td class='n'>{at[s][0]}, {at[s][1]:.3f}</td>" if s in at else "<td>–</td>"
            for s in shares
        )
        stderr = "–" if c["stderr"] is None else f"± {c['stderr']:.3f}"
        gain = c["expected_2x"] - c["ap"][-1]
        check = "" if c.get("monotonic", True) else " (its AP fell as its objects grew: check)"
        rows.append(
            f"<tr><td>{html.escape(c['name'])}</td>{points}<td class='n'>{c['expected_2x']:.3f} "
            f"{stderr}</td><td class='n'>{gain:+.3f}{check}</td></tr>"
        )
    return f"""<h2>How much more labelling would help</h2>
<p class="note">Fold {curve["fold"]}'s training images in nested subsets, each trained alike and
validated on the fold's {curve["validation_images"]} held-out images; per class the fit
{html.escape(curve["model"])}, read at twice the objects of the full run. The ± is the fit's
standard error (three points: a rough size of its doubt, not a guarantee); a fit in the
logarithm cannot see where a class saturates.</p>
<table><tr><th>class</th>{head}<th>expected AP at 2x objects</th><th>gain</th></tr>
{"".join(rows)}</table>"""
