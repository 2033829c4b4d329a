"""Does a long run keep the app's memory and payloads flat? 100k training iterations, fed
through the same sinks a real run feeds (the session's recorder, the Training step's charts), a
validation every 1000 iterations; the log tail read as the page's poller reads it.

Prints, at 10k, 50k and 100k iterations: the process RSS, the JSON size of the session history
(what ``metrics.json`` and the Experiments page get), of the charts' widget data (what /sly/data
sends the page), of the status payload (/api/status), and the time to read the log tail; then
the ratios 100k / 10k. Goal (issue 11): every ratio about 1 (flat), where the unbounded lists
grew 10x.

    .venv/bin/python bench/memory.py [--iterations 100000] [--report-every 1]
"""

from __future__ import annotations

import argparse
import json
import sys
import tempfile
import time
from dataclasses import asdict
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))


def rss_mib() -> float:
    for line in Path("/proc/self/status").read_text().splitlines():
        if line.startswith("VmRSS:"):
            return int(line.split()[1]) / 1024
    return float("nan")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--iterations", type=int, default=100_000)
    parser.add_argument("--report-every", type=int, default=1, help="the hook's interval")
    args = parser.parse_args()

    import copy

    from supervisely.app import DataJson
    from supervisely.app.content import _safe_diff

    data_json = DataJson()
    sends = [0]

    def send_changes() -> None:
        """The SDK's work per send (deep copy and diff of the page data), minus the websocket,
        which needs the server's event loop."""
        snapshot = copy.deepcopy(dict(data_json))
        _safe_diff(data_json._last, snapshot)
        data_json._last = snapshot
        sends[0] += 1

    data_json.send_changes = send_changes

    from src.hooks.metrics import TrainProgress, ValResult
    from src.training.session import SessionState, SessionStatus, _Recorder
    from src.ui.training import TrainingStep, _tail_lines

    recorder, step = _Recorder(), TrainingStep()
    sinks = (recorder, step)
    log = Path(tempfile.mkdtemp()) / "run.log"
    checkpoints = {args.iterations // 10, args.iterations // 2, args.iterations}
    rows = []
    with open(log, "w", encoding="utf-8") as log_file:
        for it in range(1, args.iterations + 1):
            if it % args.report_every:
                continue
            progress = TrainProgress(
                epoch=it // 1000 + 1, max_epochs=args.iterations // 1000, iteration=it,
                max_iterations=args.iterations, batch_index=it % 1000, batches_per_epoch=1000,
                losses={"loss": 1 / it, "loss_cls": 0.5 / it, "loss_bbox": 0.25 / it}, lr=1e-3,
            )  # fmt: skip
            for sink in sinks:
                sink.on_train_iter(progress)
            log_file.write(f"Epoch(train) [{progress.epoch}][{it}] loss: {1 / it:.4f}\n")
            if it % 1000 == 0:
                result = ValResult(epoch=progress.epoch, iteration=it,
                                   metrics={"bbox_mAP": 0.5}, per_class_ap={"a": 0.5})  # fmt: skip
                for sink in sinks:
                    sink.on_val(result)
            if it in checkpoints:
                log_file.flush()
                start = time.perf_counter()
                _tail_lines(log, 8)
                tail_ms = (time.perf_counter() - start) * 1000
                status = SessionStatus(state=SessionState.TRAINING, run_id="r", work_dir="/w",
                                       iteration=it, losses=progress.losses)  # fmt: skip
                charts = {c.plot.widget_id: DataJson()[c.plot.widget_id]
                          for c in (step.losses, step.lr, step.map, step.class_ap)}  # fmt: skip
                rows.append({
                    "iterations": it,
                    "records": len(recorder.history["train"]),
                    "rss_mib": rss_mib(),
                    "history_kb": len(json.dumps(recorder.history)) / 1024,
                    "charts_kb": len(json.dumps(charts)) / 1024,
                    "status_kb": len(json.dumps(asdict(status))) / 1024,
                    "log_mb": log.stat().st_size / 2**20,
                    "tail_ms": tail_ms,
                })  # fmt: skip
    keys = ["records", "rss_mib", "history_kb", "charts_kb", "status_kb", "log_mb", "tail_ms"]
    print(f"{'iterations':>10} " + " ".join(f"{k:>11}" for k in keys))
    for row in rows:
        print(f"{row['iterations']:>10} " + " ".join(f"{row[k]:>11.2f}" for k in keys))
    first, last = rows[0], rows[-1]
    label = f"{last['iterations'] // 1000}k/{first['iterations'] // 1000}k"
    print(f"{label:>10} " + " ".join(f"{last[k] / first[k]:>11.2f}" for k in keys))
    print(f"page updates (SDK send_changes): {sends[0]} for {args.iterations} iterations")
    print("(log_mb grows by design: the log file is the run's record; reading its tail does not)")


if __name__ == "__main__":
    main()
