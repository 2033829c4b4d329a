"""What ``train`` prints: the progress bar, the dry run's summary, and the ended run's report
with its exit code.

Apart from the flow in ``train.py`` so that the console's wording changes in one place; every
function here only reads what the controller reports.
"""

from __future__ import annotations

import argparse
import math
import sys

from src.cli.common import fail, print_evaluation
from src.config.primary_metric import headline
from src.core.errors import FAILED


class ProgressBar:
    """A tqdm bar over all iterations, with the loss and ETA; COCO metrics at each validation."""

    def __init__(self) -> None:
        self.bar = None
        # the console as it is now: the sink is called from the training thread, whose own
        # prints go to the run's log file while it trains (src.engine.chatter)
        self.out = sys.stdout

    def on_train_iter(self, progress) -> None:
        from tqdm import tqdm

        if self.bar is None:
            self.bar = tqdm(total=progress.max_iterations, unit="it", dynamic_ncols=True)
            self.bar.update(progress.iteration - 1)
        loss = progress.losses.get("loss")
        loss_text = "-" if loss is None else "nan" if not math.isfinite(loss) else f"{loss:.4f}"
        self.bar.set_description(f"epoch {progress.epoch}/{progress.max_epochs}", refresh=False)
        gpu = progress.gpu
        memory = f"  mem {gpu['peak_gib']:.1f}G" if gpu else ""
        busy = f" {gpu['util']:.0f}%" if "util" in gpu else ""
        self.bar.set_postfix_str(
            f"loss {loss_text}  lr {progress.lr or 0:.2e}{memory}{busy}", refresh=False
        )
        self.bar.update(progress.iteration - self.bar.n)

    def on_val(self, result) -> None:
        text = "  ".join(f"{k} {v:.3f}" for k, v in headline(result.metrics).items())
        text = text or "no predictions yet (every metric 0)"
        line = f"validation after epoch {result.epoch}: {text}"
        if self.bar is not None:  # tqdm.write would not clear the bar: self.out is not
            self.bar.clear()  # sys.stdout while the training thread's prints are routed
            print(line, file=self.out, flush=True)
            self.bar.refresh()
        else:
            print(line, file=self.out, flush=True)

    def close(self) -> None:
        """End the bar; the next run's first iteration starts a new one (audit's folds)."""
        if self.bar is not None:
            self.bar.close()
            self.bar = None


def _print_slicing(tiles: dict) -> None:
    """The dry run's line on a sliced split (src.data.tiles.TileStats)."""
    whole = f" + {tiles['full_images']} whole images" if tiles["full_images"] else ""
    dropped = f", {tiles['empty_dropped']} empty tiles left out" if tiles["empty_dropped"] else ""
    print(f"{'':<12} sliced: {tiles['images']} images -> {tiles['tiles']} tiles of "
          f"{tiles['size']} px (overlap {tiles['overlap']:g}){whole}{dropped}")  # fmt: skip
    if tiles.get("files"):
        from src.data.tiles import human_bytes

        print(f"{'':<12} {tiles['files']} tile files to cut into the cache, at most "
              f"{human_bytes(tiles['bytes'])} (the files already there are reused)")  # fmt: skip
    for what, n in (tiles.get("cut_objects") or {}).items():
        became = "ignore regions" if what == "ignore" else "dropped"
        print(f"{'':<12} {n} objects cut by a tile border below the visible fraction: {became}")


def _print_split_part(split: str, s: dict) -> None:
    """One split's lines of the summary: images, objects, and what the data check changed."""
    per_class = ", ".join(f"{k} {v}" for k, v in s.get("objects_per_class", {}).items())
    print(f"{split:<12} {s.get('images', 0)} images, {s.get('objects', 0)} objects ({per_class})")
    if s.get("images_without_objects"):
        kept = "dropped" if s.get("dropped_empty_images") else "kept"
        print(f"{'':<12} {s['images_without_objects']} images without objects ({kept})")
    for reason, n in (s.get("skipped") or {}).items():
        print(f"{'':<12} skipped {n} objects: {reason}")
    if ignored := s.get("ignore_regions"):
        regions = ", ".join(f"{name} {n}" for name, n in ignored.items())
        print(f"{'':<12} {sum(ignored.values())} ignore regions ({regions})")
    if tiles := s.get("slicing"):
        _print_slicing(tiles)
    if balance := s.get("class_balance"):
        per_class = balance["images_per_class"].items()
        shown = ", ".join(f"{c} {a} -> {b}" for c, (a, b) in per_class)
        (before, after), thr = balance["images"], balance["oversample_thr"]
        print(f"{'':<12} class balance {thr:g}: {before} -> {after} images an epoch; "
              f"images per class: {shown}")  # fmt: skip


def print_summary(summary: dict) -> None:
    """The dry run's summary (``controller.dry_run``): model, data, splits, shapes, warnings."""
    print(
        f"model        {summary['model']} ({summary.get('parameters', 0) / 1e6:.2f} M parameters)"
    )
    print(f"task         {summary['task']}")
    print(f"weights      {summary['weights']}")
    print(f"schedule     {summary['schedule']}")
    print(f"classes      {', '.join(summary['classes'])}")
    print(f"split        {summary['split']}")
    for split in ("train", "val"):
        _print_split_part(split, summary.get(split) or {})
    for i, line in enumerate(summary.get("input_shapes") or []):
        print(f"{'input shapes' if i == 0 else '':<12} {line}")
    for warning in summary.get("warnings") or []:
        print(f"warning      {warning}")
    print(f"work dir     {summary['work_dir']}")


def report(controller, prepared, args: argparse.Namespace, seconds: float) -> int:
    """The ended run as the CLI's output and exit code."""
    from src.training.end_of_run import export_failure, export_notes

    status = controller.status()
    outcome = status.outcome
    if status.run_state == "failed":
        if args.verbose and controller.traceback:
            print(controller.traceback, file=sys.stderr)
        return fail(f"training failed: {status.error} (log: {prepared.work_dir})", FAILED)
    if status.run_state == "stopped":
        print(
            f"stopped at epoch {status.epoch}, iteration {status.iteration}; checkpoint "
            f"{status.stopped_checkpoint}\nresume with: python -m src.cli train --resume "
            f"{prepared.run_id}"
        )
    else:
        print(f"training finished in {seconds:.0f} s")
        if status.ended_early:
            print(status.ended_early)
    if outcome is not None and outcome.upload_error:
        return fail(
            f"upload failed: {outcome.upload_error}; checkpoints stay in {prepared.work_dir}",
            FAILED,
        )
    final = headline(status.metrics)
    if final:
        print("final validation: " + "  ".join(f"{k} {v:.3f}" for k, v in final.items()))
    if outcome is not None and outcome.evaluation_error:
        print(f"evaluation failed (the run is uploaded): {outcome.evaluation_error}",
              file=sys.stderr)  # fmt: skip
    if outcome is not None and outcome.evaluation:
        print_evaluation(outcome.evaluation)
    for note in export_notes(outcome, failure=False) if outcome is not None else []:
        print(note)
    if outcome is not None and (failed := export_failure(outcome)):
        print(failed, file=sys.stderr)
    print(f"artifacts: {outcome.artifacts if outcome else None}")
    return 0
