"""``predict``: detect objects in images with an exported ONNX model (ONNX Runtime only, no mmdet),
or, with ``--project``, pre-label a project with a run (``src.cli.prelabel``,
docs/after-training.md).

What a user without the training stack runs on a model file: one line per detection, and each
image with its boxes drawn into ``--out``. Everything is checked before anything is written.
"""

from __future__ import annotations

import argparse
from pathlib import Path

from src.cli.common import CliError, fail
from src.cli.prelabel import add_prelabel_options, cmd_prelabel

DRAWN = "artifacts/predictions"  # where predict draws, by default


def add_parser(sub: argparse._SubParsersAction) -> None:
    """The command's options: the model, the images, the score threshold, the tiles."""
    pr = sub.add_parser(
        "predict",
        help="detect objects in images with an exported model (ONNX Runtime only), or pre-label "
        "a project with a run (RUN_ID --project DIR --out DIR)",
    )
    pr.add_argument("--onnx", help="a model.onnx written by the export command")
    pr.add_argument(
        "images", nargs="+", metavar="IMAGE|RUN_ID",
        help="image files (with --onnx), or the run that pre-labels --project",
    )  # fmt: skip
    pr.add_argument(
        "--score-thr", type=float, metavar="X",
        help="the lowest score shown, for every class (default: each class's own threshold, "
        "chosen on the validation split, when the model file has them; else 0.3)",
    )  # fmt: skip
    pr.add_argument(
        "--out", help=f"where the drawn images go (default: {DRAWN}); with --project: where the "
        "pre-labelled copy goes, a new or empty folder",
    )  # fmt: skip
    pr.add_argument(
        "--slice-size", type=int, metavar="PX",
        help="slice images larger than this into tiles, predict each and merge (default: the "
        "tile size of a sliced run's model, else off; 0: off)",
    )  # fmt: skip
    pr.add_argument("--slice-overlap", type=float, help="the tiles' overlap (default: the run's)")
    add_prelabel_options(pr)
    pr.set_defaults(func=cmd_predict)


def cmd_predict(args: argparse.Namespace) -> int:
    """Detect objects in images with an exported ONNX model (onnxruntime only, no mmdet): one
    line per detection, and each image with its boxes drawn into ``--out``. A model of a sliced
    run slices large images as it was validated (its tile size travels in the model file);
    ``--slice-size`` sets another, 0 turns it off. Everything is checked before anything is
    written: the model file, the tiles (training's ranges), every image, and where the drawings
    go (never over an input or a file already there)."""
    import cv2

    from src.export.onnx_runtime import draw

    if args.project is not None:
        return cmd_prelabel(args)
    if args.onnx is None:
        raise CliError("give --onnx FILE with images, or RUN_ID --project DIR --out DIR")
    detector = _open_detector(args.onnx)
    slicing = _predict_slicing(args, detector.slicing)
    above = _thresholds_line(detector, args.score_thr)
    out = Path(args.out or DRAWN)
    targets = _drawn_paths(args.images, out, args.onnx)
    for name in args.images:
        _check_image(detector, name, cv2.imread(name), slicing)
    out.mkdir(parents=True, exist_ok=True)
    for name, target in zip(args.images, targets, strict=True):
        image = cv2.imread(name)
        if slicing and max(image.shape[:2]) > slicing["size"]:
            found = _predict_sliced(detector, image, slicing)
            print(f"{name}: sliced into tiles of {slicing['size']} px (boxes only)")
        else:
            found = detector.predict([image], score_thr=0.0)[0]
        found = detector.keep(found, args.score_thr)
        for box, score, label in zip(found.boxes, found.scores, found.labels, strict=True):
            x1, y1, x2, y2 = (round(float(v)) for v in box)
            print(f"{name}: {detector.classes[label]} {score:.2f} at {x1},{y1},{x2},{y2}")
        print(f"{name}: {len(found.scores)} objects above {above}")
        if not cv2.imwrite(str(target), draw(image, found, detector.classes)):
            return fail(f"cannot write {target}: check that {out} is writable")
        if target.stem != Path(name).stem:
            print(f"{name}: drawn as {target.name} (another input has the same name)")
    print(f"drawn: {out}")
    return 0


def _thresholds_line(detector, score_thr: float | None) -> str:
    """The score thresholds predict applies, said once (the per-class ones in full) and named
    in each image's count: ``--score-thr`` for every class, else the model file's own per
    class, else the default."""
    from src.export.onnx_runtime import DEFAULT_SCORE_THR

    if score_thr is not None or not detector.class_thresholds:
        return str(DEFAULT_SCORE_THR if score_thr is None else score_thr)
    values = detector.score_thresholds()
    listed = ", ".join(f"{n} {v:.3f}" for n, v in zip(detector.classes, values, strict=True))
    print(f"score thresholds per class (chosen on the validation split; --score-thr X sets one "
          f"for every class): {listed}")  # fmt: skip
    return "their class's threshold"


def _open_detector(path: str):
    """The exported model, or a ``CliError`` saying what is wrong with the file."""
    from src.export.onnx_runtime import OnnxDetector

    again = "export the run again (python -m src.cli export RUN_ID)"
    file = Path(path)
    if not file.is_file():
        raise CliError(
            f"model file {path} does not exist: give the .onnx file the export command wrote "
            "(python -m src.cli export RUN_ID)"
        )
    if file.stat().st_size == 0:
        raise CliError(f"model file {path} is empty (0 bytes): {again}")
    try:
        return OnnxDetector(str(file))
    except (KeyError, ValueError, TypeError):  # a model, but not with this app's metadata
        raise CliError(
            f"{path} is an ONNX model, but not one this app exported (its sly_mmdet_export "
            f"metadata is missing or unreadable): {again}"
        ) from None
    except Exception as exc:  # onnxruntime's load errors derive from Exception alone
        reason = " ".join(str(exc).split())[:200]
        raise CliError(
            f"model file {path} cannot be loaded by ONNX Runtime ({reason}): it is truncated or "
            f"not an ONNX model; {again}"
        ) from None


def _predict_slicing(args: argparse.Namespace, own: dict | None) -> dict:
    """The tiles to predict with: the model's own (a sliced run's), ``--slice-size`` (0: off)
    and ``--slice-overlap`` over them; checked against training's ranges
    (``src.config.params.slicing_problems``). Empty: no slicing."""
    from src.config.params import slicing_problems

    slicing = dict(own or {})
    if args.slice_size is not None:
        slicing = {**slicing, "size": args.slice_size} if args.slice_size else {}
    if args.slice_overlap is not None:
        if not slicing:
            raise CliError(
                "--slice-overlap needs tiles: give --slice-size PX (this model has no tile size "
                "of its own)"
            )
        slicing["overlap"] = args.slice_overlap
    problems = slicing_problems(slicing) if slicing else []
    if problems:
        raise CliError("; ".join(problems))
    return slicing


def _drawn_paths(images: list[str], out: Path, model: str) -> list[Path]:
    """Where each image's drawing goes: ``OUT/<stem>.jpg``, and for a later input with a stem
    already used ``<stem>_2.jpg``, ``<stem>_3.jpg``... A ``CliError`` when ``--out`` is the
    folder of an input (predict never writes where it reads) or already holds one of them."""
    if out.exists() and not out.is_dir():
        raise CliError(f"--out {out} is a file: give a folder for the drawn images")
    where = out.resolve()
    for name in images:
        if Path(name).resolve().parent == where:
            raise CliError(
                f"--out {out} is the folder of the input {name}: predict never writes where it "
                "reads; give another --out"
            )
    taken: set[str] = set()
    targets = []
    for name in images:
        stem, n = Path(name).stem, 1
        candidate = f"{stem}.jpg"
        while candidate in taken:
            n += 1
            candidate = f"{stem}_{n}.jpg"
        taken.add(candidate)
        targets.append(out / candidate)
    inputs = {Path(p).resolve() for p in [*images, model]}
    there = [t for t in targets if t.exists() or t.is_symlink() or t.resolve() in inputs]
    if there:
        shown = ", ".join(t.name for t in there[:5]) + (
            f" and {len(there) - 5} more" if len(there) > 5 else ""
        )
        raise CliError(
            f"--out {out} already holds {shown}: predict never overwrites; give a new --out "
            "folder or move those files away"
        )
    return targets


def _check_image(detector, name: str, image, slicing: dict) -> None:
    """A ``CliError`` for an image that cannot be read, or that the model's resize would
    shrink to nothing (a 1x5000 strip): whole (unless only its tiles are predicted) and as a
    tile."""
    if image is None:
        raise CliError(f"{name} is not an image OpenCV can read")
    height, width = image.shape[:2]
    sliced = bool(slicing) and max(height, width) > slicing["size"]
    pieces = [] if sliced and not slicing.get("full_image", True) else [(height, width)]
    if sliced:
        pieces.append((min(height, slicing["size"]), min(width, slicing["size"])))
    for h, w in pieces:
        if min(detector.resized_size(h, w)) < 1:
            long, short = detector.scale
            raise CliError(
                f"{name} is {width}x{height} px: resized to fit the model's {long}x{short} input, "
                f"a {w}x{h} px {'tile' if (h, w) != (height, width) else 'image'} would be less "
                "than 1 px on its shorter side; crop it into less elongated pieces"
            )


def _predict_sliced(detector, image, slicing: dict):
    """The ONNX model over the image's tiles, merged as a sliced run's validation merges them."""
    from src.engine.tile_merge import predict_sliced
    from src.export.onnx_runtime import Detections

    def detect(images):
        return [(d.boxes, d.scores, d.labels) for d in detector.predict(images, score_thr=0.0)]

    merged = predict_sliced(
        detect, image, int(slicing["size"]), float(slicing.get("overlap", 0.2)),
        bool(slicing.get("full_image", True)),
    )  # fmt: skip
    return Detections(merged.boxes, merged.scores, merged.labels.astype(int))
