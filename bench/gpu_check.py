"""The one prepared GPU check (issue 34, Deliver 4): what a lent card must confirm, in one call.

Run by ``scripts/gpu_check.sh`` after ``scripts/gpu_setup.sh``; stages, in order:

1. ``environment``: Python, torch, CUDA, the card, mmcv's ops, TensorRT, onnxruntime;
2. ``rtmdet_sizing``: the app's sizing (``autosize.size_the_run``) of RTMDet-s at 640 px on photos
   of every orientation, to the memory's limit (the 16-steps-an-epoch cap lifted);
3. ``rtmdet_steps``: 30 real training steps at the chosen batch from the mixed loader: the
   *reserved* peak against the sizing's budget, ``num_alloc_retries``, any out-of-memory;
4. ``second_sizing``: the same sizing again in the same process (the first run's cache still
   held, as in an app that trains twice): the same batch is expected;
5. ``oom_recovery``: a sizing with AMP and grad clipping whose second clip raises CUDA's
   out-of-memory error (after ``unscale_``, where issue 34's item 4 lives): the sizing must go on
   to a good trial and choose a batch;
6. ``session_vs_bare``: ``bench/gpu.py``'s children at the chosen batch: the model's limit, then
   3 pairs of the bare Runner and our session, each ``--iters`` iterations (not epochs);
7. ``maskrcnn``: Mask R-CNN R50 sized the same way, then 10 steps at its batch;
8. ``onnx_parity``: the trained RTMDet-s exported, mmdet on the card vs the graph in onnxruntime;
9. ``tensorrt``: where it imports, an engine from that graph vs the graph (clamped as built);
10. ``speed``: the export's speed test (``src.engine.speed``), PyTorch on the card vs onnxruntime.

Each stage appends one JSON line to ``<out>/check.jsonl`` the moment it ends (status ``ok``,
``failed``, ``timed_out`` or ``skipped`` with the reason, and what it measured so far) and runs
under a deadline of its own (``DEADLINES``), so a run cut short keeps every finished stage.
``--smoke`` rehearses all of it on the CPU, tiny (its numbers mean nothing): stages that need CUDA
say so and are skipped. Usage: ``python bench/gpu_check.py [--smoke] [--out DIR]`` (DIR: $OUT).
"""

from __future__ import annotations

import argparse
import contextlib
import gc
import json
import os
import platform
import signal
import subprocess
import sys
import tempfile
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))
sys.path.insert(0, str(ROOT / "bench"))

import gpu  # noqa: E402  (bench/gpu.py: the configs and children this check reuses)

RTMDET, MASK_RCNN = "RTMDet-s", "Mask R-CNN R50"
# seconds each stage may take on one H100/H200 (about 8 minutes in all, with margin)
DEADLINES = {"environment": 20, "rtmdet_sizing": 60, "rtmdet_steps": 45, "second_sizing": 45,
             "oom_recovery": 45, "session_vs_bare": 150, "maskrcnn": 60, "onnx_parity": 40,
             "tensorrt": 60, "speed": 30}  # fmt: skip
# the CPU rehearsal's deadlines: a shared 2-core machine under load is many times slower
SMOKE_SLACK = 8


class StageTimeout(Exception):
    """A stage ran past its deadline (raised in the main thread by SIGALRM)."""


class Skip(Exception):
    """A stage cannot run here; the message says why."""


class Check:
    """What the stages share: options, the generated project, the device, earlier results."""

    def __init__(self, args: argparse.Namespace, root: Path) -> None:
        self.args = args
        self.out = Path(args.out)
        self.root = root
        self.cuda = not args.smoke
        self.device = "cuda:0" if self.cuda else "cpu"
        self.state: dict[str, Any] = {}

    def opts(self, **extra: Any) -> argparse.Namespace:
        """bench/gpu.py's options for its configs and children."""
        values = vars(self.args) | {"project": str(self.state["project"])} | extra
        return argparse.Namespace(**values)

    def cfg(self, name: str, work: str, batch: int | None) -> Any:
        """The benchmark's config of ``name``; batch None leaves it to the app's sizing."""
        model, task = gpu.MODELS[name]
        return gpu.make_cfg(self.opts(), model, task, self.root / work, batch)


def _deadline(seconds: float) -> contextlib.AbstractContextManager:
    @contextlib.contextmanager
    def alarm():
        def fire(signum, frame):
            raise StageTimeout(f"past its deadline of {seconds:.0f} s")

        previous = signal.signal(signal.SIGALRM, fire)
        signal.setitimer(signal.ITIMER_REAL, seconds)
        try:
            yield
        finally:
            signal.setitimer(signal.ITIMER_REAL, 0)
            signal.signal(signal.SIGALRM, previous)

    return alarm()


def run_stage(check: Check, name: str, stage: Callable[[Check, dict], None]) -> dict:
    """Run one stage under its deadline; append its line to check.jsonl as soon as it ends."""
    deadline = DEADLINES[name] * (SMOKE_SLACK if check.args.smoke else 1)
    record: dict[str, Any] = {"stage": name, "deadline_s": deadline}
    started = time.perf_counter()
    try:
        with _deadline(deadline):
            stage(check, record)
        record["status"] = "ok"
    except Skip as exc:
        record |= {"status": "skipped", "reason": str(exc)}
    except StageTimeout as exc:
        record |= {"status": "timed_out", "reason": str(exc)}
    except Exception as exc:  # a failed stage is a finding: the next ones still run
        record |= {"status": "failed", "reason": f"{type(exc).__name__}: {exc}"[:2000]}
    record["seconds"] = round(time.perf_counter() - started, 2)
    with (check.out / "check.jsonl").open("a", encoding="utf-8") as f:
        f.write(json.dumps(record, default=str) + "\n")
        f.flush()
        os.fsync(f.fileno())
    print(f"[gpu-check] {name}: {record['status']} in {record['seconds']} s", flush=True)
    return record


def environment(check: Check, record: dict) -> None:
    import mmcv
    import mmdet
    import mmengine
    import torch

    record |= {"python": platform.python_version(), "torch": torch.__version__,
               "cuda": torch.version.cuda, "cores": len(os.sched_getaffinity(0)),
               "mmcv": mmcv.__version__, "mmdet": mmdet.__version__,
               "mmengine": mmengine.__version__,
               "alloc_conf": os.environ.get("PYTORCH_CUDA_ALLOC_CONF")}  # fmt: skip
    if check.cuda:
        free, total = torch.cuda.mem_get_info(0)
        record |= {"card": torch.cuda.get_device_name(0),
                   "capability": ".".join(map(str, torch.cuda.get_device_capability(0))),
                   "free_gib": round(free / 2**30, 2),
                   "total_gib": round(total / 2**30, 2)}  # fmt: skip
    from mmcv.ops import nms

    boxes = torch.tensor([[0.0, 0, 10, 10], [1, 1, 11, 11]], device=check.device)
    kept = nms(boxes, torch.tensor([0.9, 0.8], device=boxes.device), 0.5)[1]
    record["mmcv_nms_on_device"] = kept.tolist()
    try:
        import tensorrt

        record["tensorrt"] = tensorrt.__version__
    except ImportError as exc:
        record["tensorrt"] = f"not importable: {exc}"
    import onnxruntime

    record["onnxruntime"] = f"{onnxruntime.__version__} {onnxruntime.get_available_providers()}"


def _memory_now(check: Check) -> dict:
    if not check.cuda:
        return {}
    import torch

    free, _ = torch.cuda.mem_get_info(0)
    return {"free_gib": round(free / 2**30, 2),
            "reserved_gib": round(torch.cuda.memory_reserved(0) / 2**30, 2)}  # fmt: skip


def _size(check: Check, name: str, work: str, record: dict) -> int:
    """The app's sizing of ``name`` (its public entry, ``size_the_run``): the batch, its notes
    and the budget (the fraction of the memory free before it) into ``record``."""
    from src.engine import autosize

    cfg = check.cfg(name, work, None)
    before = _memory_now(check)
    fraction = getattr(autosize, "MEMORY_FRACTION", None)
    record["before"] = before
    if before and fraction:
        record["budget_gib"] = round(before["free_gib"] * fraction, 2)
    # the memory's limit, not the 16-steps-an-epoch cap (the zoo config's batch still caps it)
    steps, autosize.MIN_STEPS_PER_EPOCH = autosize.MIN_STEPS_PER_EPOCH, 1
    try:
        sized = autosize.size_the_run(cfg, check.device)
    finally:
        autosize.MIN_STEPS_PER_EPOCH = steps
    record |= {"batch": sized.batch_size, "notes": sized.notes, "after": _memory_now(check)}
    return int(sized.batch_size)


def rtmdet_sizing(check: Check, record: dict) -> None:
    check.state["rtmdet_batch"] = _size(check, RTMDET, "size1", record)
    check.state["budget_gib"] = record.get("budget_gib")


def _steps(check: Check, name: str, batch: int, steps: int, record: dict) -> Any:
    """``steps`` real training steps of ``name`` at ``batch`` from the mixed loader (the epochs
    cycled): the reserved and allocated peaks, allocator retries, canvases; returns the model."""
    import copy

    import torch
    from mmdet.registry import MODELS
    from mmengine.optim import build_optim_wrapper

    cfg = check.cfg(name, f"steps_{name.split()[0]}", batch)
    loader = _loader(cfg)
    net = MODELS.build(copy.deepcopy(cfg.model)).to(check.device).train()
    optim = build_optim_wrapper(net, copy.deepcopy(cfg.optim_wrapper))
    if check.cuda:
        torch.cuda.reset_peak_memory_stats(0)
    record |= {"batch": batch, "steps_done": 0, "mixed_batches": 0, "largest_canvas": [0, 0]}
    while record["steps_done"] < steps:
        for data in loader:
            shapes = [tuple(t.shape[-2:]) for t in data["inputs"]]
            record["mixed_batches"] += len({h > w for h, w in shapes}) > 1
            canvas = [max(s[0] for s in shapes), max(s[1] for s in shapes)]
            if canvas[0] * canvas[1] > record["largest_canvas"][0] * record["largest_canvas"][1]:
                record["largest_canvas"] = canvas
            net.train_step(data, optim)
            record["steps_done"] += 1
            if check.cuda:
                _note_cuda_memory(record)
            if record["steps_done"] == steps:
                break
    return net


def _loader(cfg: Any) -> Any:
    from mmengine.registry import init_default_scope
    from mmengine.runner import Runner

    import src.data.mmdet_dataset
    import src.engine.loops  # noqa: F401  (registers the app's sampler)

    init_default_scope("mmdet")
    return Runner.build_dataloader(cfg.train_dataloader, seed=0)


def _note_cuda_memory(record: dict) -> None:
    import torch

    stats = torch.cuda.memory_stats(0)
    record["reserved_peak_gib"] = round(stats.get("reserved_bytes.all.peak", 0) / 2**30, 2)
    record["allocated_peak_gib"] = round(stats.get("allocated_bytes.all.peak", 0) / 2**30, 2)
    record["num_alloc_retries"] = stats.get("num_alloc_retries", 0)
    record["num_ooms"] = stats.get("num_ooms", 0)


def rtmdet_steps(check: Check, record: dict) -> None:
    steps = 2 if check.args.smoke else 30
    check.state["rtmdet"] = _steps(check, RTMDET, check.state["rtmdet_batch"], steps, record)
    budget = check.state.get("budget_gib")
    if budget and "reserved_peak_gib" in record:
        record["reserved_peak_within_budget"] = record["reserved_peak_gib"] <= budget


def second_sizing(check: Check, record: dict) -> None:
    """The first run's cache is left as a run leaves it (no ``empty_cache`` here): whether the
    app's sizing copes is what this stage is for. The trained RTMDet-s (small) stays for the
    export stages."""
    gc.collect()
    batch = _size(check, RTMDET, "size2", record)
    record["first_batch"] = check.state["rtmdet_batch"]
    record["same_batch"] = batch == check.state["rtmdet_batch"]


def oom_recovery(check: Check, record: dict) -> None:
    if not check.cuda:
        raise Skip("the batch search runs on CUDA only (on the CPU the batch is the default)")
    import torch

    real = torch.nn.utils.clip_grad_norm_
    calls = {"n": 0}

    def clip_then_oom(*args: Any, **kwargs: Any) -> Any:
        calls["n"] += 1
        if calls["n"] == 2:  # after the GradScaler's unscale_, as a real OOM there would be
            raise torch.cuda.OutOfMemoryError("CUDA out of memory (forced by gpu_check)")
        return real(*args, **kwargs)

    from src.engine import autosize

    cfg = check.cfg(RTMDET, "size_oom", None)
    cfg.optim_wrapper.clip_grad = dict(max_norm=35.0, norm_type=2)
    record["optim_wrapper"] = cfg.optim_wrapper.get("type")
    torch.nn.utils.clip_grad_norm_ = clip_then_oom
    try:
        sized = autosize.size_the_run(cfg, check.device)
    finally:
        torch.nn.utils.clip_grad_norm_ = real
    record |= {"clip_calls": calls["n"], "forced_oom_raised": calls["n"] >= 2,
               "batch": sized.batch_size, "notes": sized.notes}  # fmt: skip


def _child(check: Check, mode: str, name: str, batch: int, tag: str, timeout: float) -> dict:
    """One of bench/gpu.py's measurements in a fresh process, its JSON result."""
    opts = check.opts()
    cmd = [sys.executable, str(ROOT / "bench" / "gpu.py"), "--child", mode, "--model", name,
           "--work", str(check.root / tag), "--project", opts.project, "--iters", str(opts.iters),
           "--images", str(opts.images), "--size", str(opts.size), "--out", str(check.out),
           "--batch-size", str(batch), "--no-eval", "--no-profile",
           *(["--smoke"] if opts.smoke else [])]  # fmt: skip
    done = subprocess.run(cmd, capture_output=True, text=True, cwd=ROOT, timeout=timeout)
    if done.returncode:
        raise RuntimeError(f"{mode} exited {done.returncode}: {done.stderr[-1500:]}")
    return json.loads(done.stdout.strip().splitlines()[-1])


def session_vs_bare(check: Check, record: dict) -> None:
    batch = check.state.get("rtmdet_batch") or 2
    slack = SMOKE_SLACK if check.args.smoke else 1
    ends = time.monotonic() + DEADLINES["session_vs_bare"] * slack
    left = lambda: max(1.0, ends - time.monotonic())  # noqa: E731
    record |= {"batch": batch, "iters": check.args.iters, "pairs": []}
    # the limit's child only on a card (the smoke's pair rehearses the same code, in a third less)
    limit = None if check.args.smoke else _child(check, "limit", RTMDET, batch, "limit", left())
    record["limit_images_per_s"] = limit and limit["images_per_s"]
    for i in range(check.args.pairs):
        pair = {m: _child(check, m, RTMDET, batch, f"{m}{i}", left()) for m in ("bare", "session")}
        record["pairs"].append({m: {"rate": r["rate"], "memory": r["memory"]}
                                for m, r in pair.items()})  # fmt: skip
    rates = [(p["bare"]["rate"], p["session"]["rate"]) for p in record["pairs"]]
    record["ratios"] = [round(s / b, 4) for b, s in rates]
    session_images = sorted(s for _, s in rates)[len(rates) // 2] * batch
    if limit:
        record["session_of_limit"] = round(session_images / limit["images_per_s"], 3)


def maskrcnn(check: Check, record: dict) -> None:
    sizing: dict = {}
    record["sizing"] = sizing
    batch = _size(check, MASK_RCNN, "size_mask", sizing)
    steps: dict = {}
    record["steps"] = steps
    _steps(check, MASK_RCNN, batch, 1 if check.args.smoke else 10, steps)
    if sizing.get("budget_gib") and "reserved_peak_gib" in steps:
        record["reserved_peak_within_budget"] = steps["reserved_peak_gib"] <= sizing["budget_gib"]


def _images(check: Check, count: int) -> list:
    import cv2

    paths = sorted(p for p in Path(check.state["project"], "val").rglob("img/*") if p.is_file())
    return [cv2.imread(str(p)) for p in paths[:count]]


def _exported(check: Check) -> tuple[Any, Any, Path]:
    """The trained RTMDet-s ready for inference on the device, and its ONNX file (made once)."""
    if "onnx" not in check.state:
        from src.export.onnx_export import export_model

        cfg = check.cfg(RTMDET, "export", check.state.get("rtmdet_batch") or 2)
        model = check.state["rtmdet"].eval()
        model.cfg = cfg  # what mmdet's inference reads the test pipeline from
        onnx_file = export_model(cfg, model.cpu(), check.root / "rtmdet_s.onnx")
        check.state["onnx"] = (cfg, model.to(check.device), onnx_file)
    return check.state["onnx"]


def _pairs(ref_boxes, ref_scores, ref_labels, boxes, scores, labels, best: int = 20) -> int:
    """How many of the ``best`` reference detections have a partner: same label, box IoU >=
    0.99, score within 1e-3."""
    import numpy as np

    found = 0
    for box, score, label in list(zip(ref_boxes, ref_scores, ref_labels, strict=True))[:best]:
        lo, hi = np.maximum(box[:2], boxes[:, :2]), np.minimum(box[2:], boxes[:, 2:])
        inter = np.prod(np.clip(hi - lo, 0, None), axis=1)
        union = np.prod(box[2:] - box[:2]) + np.prod(boxes[:, 2:] - boxes[:, :2], axis=1) - inter
        iou = inter / np.maximum(union, 1e-9)
        found += bool(((iou >= 0.99) & (labels == label) & (abs(scores - score) <= 1e-3)).any())
    return found


def onnx_parity(check: Check, record: dict) -> None:
    from mmdet.apis import inference_detector

    from src.export.onnx_runtime import OnnxDetector

    _, model, onnx_file = _exported(check)
    detector = OnnxDetector(str(onnx_file))
    record |= {"images": 0, "compared": 0, "matched": 0, "model": f"{RTMDET} after the steps",
               "mmdet_detections": 0, "onnx_detections": 0}  # fmt: skip
    for image in _images(check, 2 if check.args.smoke else 6):
        ref = inference_detector(model, image).pred_instances.cpu().numpy()
        got = detector.predict([image])[0]
        record["images"] += 1
        record["mmdet_detections"] += len(ref.scores)
        record["onnx_detections"] += len(got.scores)
        record["compared"] += min(20, len(ref.scores))
        record["matched"] += _pairs(ref.bboxes, ref.scores, ref.labels, got.boxes, got.scores,
                                    got.labels)  # fmt: skip


def tensorrt(check: Check, record: dict) -> None:
    import numpy as np

    from src.export.tensorrt_build import (
        TensorRTDetector,
        build_engine,
        clamp_topk,
        tensorrt_blocker,
    )

    blocker = tensorrt_blocker()
    if blocker:
        raise Skip(blocker)
    from src.export.onnx_runtime import OnnxDetector

    _, _, onnx_file = _exported(check)
    clamped = check.root / "clamped.onnx"
    record["clamped_k"] = clamp_topk(onnx_file, clamped)
    reference = OnnxDetector(str(clamped))
    started = time.perf_counter()
    engine_file = build_engine(onnx_file, check.root / "m.engine", fp16=False,
                               max_side=reference.scale[0], divisor=reference.divisor)  # fmt: skip
    engine = TensorRTDetector(engine_file)
    record |= {"build_s": round(time.perf_counter() - started, 1), "compared": 0, "matched": 0}
    for image in _images(check, 6):
        canvas = reference.batch([image])
        sizes = np.array([image.shape[:2]], np.float32)
        want = reference.session.run(reference.outputs, {"images": canvas, "orig_size": sizes})
        got = engine.run(canvas, sizes)
        record["compared"] += 20
        record["matched"] += _pairs(want[0][0, :, :4], want[0][0, :, 4], want[1][0],
                                    got[0][0, :, :4], got[0][0, :, 4], got[1][0])  # fmt: skip


def speed(check: Check, record: dict) -> None:
    from src.engine.speed import measure
    from src.export.formats import speed_runners
    from src.export.onnx_runtime import OnnxDetector

    _, model, onnx_file = _exported(check)
    smoke = check.args.smoke
    runners = speed_runners(model, OnnxDetector(str(onnx_file)))
    images = _images(check, 2 if smoke else 8)
    rows = measure(runners, images, batch_sizes=(1, 2) if smoke else (1, 8),
                   repeats=1 if smoke else 3)  # fmt: skip
    record["rows"] = rows


STAGES: list[tuple[str, Callable[[Check, dict], None]]] = [
    ("environment", environment), ("rtmdet_sizing", rtmdet_sizing),
    ("rtmdet_steps", rtmdet_steps), ("second_sizing", second_sizing),
    ("oom_recovery", oom_recovery), ("session_vs_bare", session_vs_bare),
    ("maskrcnn", maskrcnn), ("onnx_parity", onnx_parity), ("tensorrt", tensorrt),
    ("speed", speed),
]  # fmt: skip
# what a stage needs from an earlier one that may have failed
NEEDS = {"rtmdet_steps": "rtmdet_batch", "second_sizing": "rtmdet_batch", "onnx_parity": "rtmdet",
         "tensorrt": "rtmdet", "speed": "rtmdet"}  # fmt: skip


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--smoke", action="store_true", help="CPU, tiny: rehearses the check")
    parser.add_argument("--out", default=os.environ.get("OUT") or str(ROOT / "bench" / "out"))
    parser.add_argument("--pairs", type=int, default=3)
    parser.add_argument("--iters", type=int, default=40, help="per timed run, warm-up included")
    parser.add_argument("--images", type=int, default=192)
    parser.add_argument("--size", type=int, default=640)
    args = parser.parse_args(argv)
    if args.smoke:
        args.pairs, args.iters, args.images, args.size = 1, gpu.WARMUP + 2, 12, 128
    import torch

    if not args.smoke and not torch.cuda.is_available():
        print("gpu_check: no CUDA GPU here (rehearse with --smoke)")
        return 2
    Path(args.out).mkdir(parents=True, exist_ok=True)
    from src.data.demo import DemoOptions, make_demo_project

    with tempfile.TemporaryDirectory(prefix="gpu_check_") as tmp:
        check = Check(args, Path(tmp))
        check.state["project"] = make_demo_project(
            Path(tmp) / "project", DemoOptions(images=args.images, seed=0, mixed_sizes=True)
        )
        for name, stage in STAGES:
            need = NEEDS.get(name)
            missing = need and need not in check.state
            why = f"needs {need} from an earlier stage, which failed"
            run_stage(check, name, _skipped(why) if missing else stage)
    return 0


def _skipped(reason: str) -> Callable[[Check, dict], None]:
    def stage(check: Check, record: dict) -> None:
        raise Skip(reason)

    return stage


if __name__ == "__main__":
    sys.exit(main())
