"""Sizing a run on its device (src/engine/autosize.py): the batch search's steps, an
out-of-memory it backs off from, the workers per GPU, and the choices reaching the config.

No GPU here: the search runs real training steps of RTMDet-tiny on the CPU while a stand-in
answers for the card's memory as a GPU would (a base plus so much per image, and an
out-of-memory error past a size)."""

from __future__ import annotations

import pytest
import torch

from src.config.params import DEFAULT_BATCH_SIZE, DEFAULT_WORKERS, TrainParams
from src.config.text import config_to_text, parse_config_text
from src.engine import autosize
from src.engine.autosize import TrainStepProbe, choose_workers, search_batch_size, size_the_run
from tests.engine.caching_allocator import CachingCard, FakeNvml, StepCost
from tests.helpers import run, small_cfg

GIB = 2**30


def linear_card(base: float, per_image: float, oom_above: int | None = None):
    """A measure as a card answers it: peak bytes, None (out of memory) above ``oom_above``."""
    tried: list[int] = []

    def measure(batch: int) -> int | None:
        tried.append(batch)
        if oom_above is not None and batch > oom_above:
            return None
        return int((base + per_image * batch) * GIB)

    return measure, tried


def test_the_search_doubles_then_bisects_to_the_largest_batch_within_the_budget():
    measure, tried = linear_card(base=1, per_image=1)
    search = search_batch_size(measure, budget_bytes=8 * GIB, cap=256)
    assert search.batch_size == 7  # 1 + 7 x 1 = 8 GiB
    assert tried == [1, 2, 4, 8, 6, 7]
    assert search.limited_by == "memory"
    assert "batch size 7" in search.describe() and "8: 9.0 GiB" in search.describe()


def test_an_out_of_memory_below_the_budget_is_backed_off_from():
    """The card runs out before the budget says it would (fragmentation, another process)."""
    measure, _ = linear_card(base=1, per_image=0.1, oom_above=37)
    search = search_batch_size(measure, budget_bytes=100 * GIB, cap=256)
    assert search.batch_size >= 34 and search.batch_size <= 37  # within 10 % of what fits
    assert (64, None) in search.trials and all(b <= 37 for b, p in search.trials if p)
    assert "64: OOM" in search.describe()


def test_the_search_stops_at_its_cap_and_when_batch_one_does_not_fit():
    measure, tried = linear_card(base=1, per_image=0.01)
    search = search_batch_size(measure, budget_bytes=100 * GIB, cap=12)
    assert (search.batch_size, search.limited_by) == (12, "cap")
    assert tried == [1, 2, 4, 8, 12]
    measure, _ = linear_card(base=10, per_image=1)
    search = search_batch_size(measure, budget_bytes=8 * GIB, cap=64)
    assert (search.batch_size, search.limited_by) == (1, "batch 1 does not fit")


def test_workers_come_from_the_cores_per_gpu():
    assert choose_workers(16, processes=1, cuda=True) == 8  # at most 8
    assert choose_workers(16, processes=4, cuda=True) == 3  # 4 cores each, one for the process
    assert choose_workers(2, processes=1, cuda=True) == 2
    assert choose_workers(64, processes=1, cuda=False) == DEFAULT_WORKERS


class StandInCuda:
    """The card's memory as CudaMemory reads it, for a card of ``total`` GiB where a step takes
    ``base`` plus ``per_image`` GiB per image and runs out of memory above ``oom_above``."""

    def __init__(self, free: float, base: float, per_image: float, oom_above: int) -> None:
        self.free, self.base, self.per_image, self.oom_above = free, base, per_image, oom_above
        self.batch = 0
        self.steps: list[int] = []

    def free_bytes(self) -> int:
        return int(self.free * GIB)

    def reset_peak(self) -> None:
        self.batch = 0

    def peak_bytes(self) -> int:
        return int((self.base + self.per_image * self.batch) * GIB)

    def release(self) -> None:
        pass

    def probe(self, cfg, device, memory) -> TrainStepProbe:
        """A real probe on the CPU whose model tells this stand-in each step's batch, and
        raises the out-of-memory error a card would past ``oom_above``."""
        probe = TrainStepProbe(cfg, "cpu", memory)
        preprocess = probe.model.data_preprocessor.forward

        def forward(data, training=False):
            self.batch = len(data["inputs"])
            self.steps.append(self.batch)
            if self.batch > self.oom_above:
                raise torch.cuda.OutOfMemoryError("CUDA out of memory. Tried to allocate 2.00 GiB")
            return preprocess(data, training)

        probe.model.data_preprocessor.forward = forward
        return probe


def _auto_cfg(demo_project, tmp_path, **overrides):
    values = dict(train_batch_size=None, num_workers=None)
    values.update(overrides)
    return small_cfg(demo_project, tmp_path / "run", **values)


def test_a_gpu_run_gets_the_largest_batch_that_fits_and_the_choices_reach_the_config(
    mixed_project, tmp_path, monkeypatch
):
    """On photo-shaped images (16:9, 4:3, portrait): the probe's sample is the largest padded
    one the pipeline makes."""
    monkeypatch.setattr(autosize, "MIN_STEPS_PER_EPOCH", 1)  # the search's steps, not the cap
    cfg = _auto_cfg(mixed_project, tmp_path)
    assert cfg.sly_metadata.auto_size == ["train_batch_size", "num_workers"]
    card = StandInCuda(free=10, base=1, per_image=0.5, oom_above=9)  # budget 8 GiB: 14 fit
    monkeypatch.setattr(autosize, "usable_cpus", lambda: 16)
    sized = size_the_run(cfg, "cuda:0", memory=card, probe_factory=card.probe)
    # 1, 2, 4 fit; 8 fits (5 GiB); 12 (the train split's 12 images cap it) runs out of memory
    assert card.steps[:5] == [1, 2, 4, 8, 12]
    assert sized.batch_size == 9 and 10 in card.steps  # backed off from the OOM at 10 and 12
    assert sized.num_workers == 8
    text = config_to_text(cfg)  # what config.py says: the run as it trained
    again = parse_config_text(text)
    assert again.train_dataloader.batch_size == 9
    # validation between epochs: half the workers (compose_data.val_loader_workers)
    assert again.train_dataloader.num_workers == 8 and again.val_dataloader.num_workers == 4
    assert again.sly_metadata.auto_size == []
    assert again.sly_metadata.train_params["train_batch_size"] == 9
    assert any("batch size 9" in note and "cuda:0" in note for note in sized.notes)
    assert "12: OOM" in " ".join(sized.notes)


def test_on_the_cpu_auto_keeps_the_defaults_and_the_session_reports_them(demo_project, tmp_path):
    cfg = _auto_cfg(demo_project, tmp_path, epochs=1)
    session, status = run(cfg, "auto-cpu")
    assert status.state == "finished", status.error
    saved = parse_config_text((tmp_path / "run" / "config.py").read_text())
    assert saved.train_dataloader.batch_size == DEFAULT_BATCH_SIZE
    assert saved.train_dataloader.num_workers == DEFAULT_WORKERS
    assert saved.sly_metadata.auto_size == []
    assert session.notes == [
        f"data-loader workers: {DEFAULT_WORKERS} (auto, for the CPU)",
        f"batch size {DEFAULT_BATCH_SIZE} (auto, on the CPU)",
    ]


def test_what_the_user_sets_is_kept_and_cuda_runs_get_pinned_memory_and_amp(demo_project, tmp_path):
    cfg = small_cfg(demo_project, tmp_path / "run", train_batch_size=3, num_workers=0)
    assert cfg.sly_metadata.auto_size == []
    assert size_the_run(cfg, "cuda:0").notes == []  # nothing is left to the app
    assert cfg.train_dataloader.batch_size == 3
    assert not cfg.train_dataloader.pin_memory and cfg.optim_wrapper.type == "OptimWrapper"
    gpu = small_cfg(demo_project, tmp_path / "gpu", device="cuda:0")
    assert gpu.train_dataloader.pin_memory and gpu.val_dataloader.pin_memory
    assert gpu.optim_wrapper.type == "AmpOptimWrapper"  # AMP auto: on for CUDA
    off = small_cfg(demo_project, tmp_path / "off", device="cuda:0", amp=False)
    assert off.optim_wrapper.type == "OptimWrapper"


@pytest.mark.parametrize(
    ("given", "expected"),
    [("auto", None), (None, None), (8, 8)],
)
def test_the_api_and_the_cli_take_auto(given, expected, tmp_path):
    from src.cli import build_parser
    from src.setup.requests import request_from_json

    request = request_from_json(
        {"project": "p", "hyperparameters": {"train_batch_size": given, "num_workers": given}},
        str(tmp_path),
    )
    assert request.params.train_batch_size == expected
    assert request.params.num_workers == expected
    flag = "auto" if given is None else str(given)
    args = build_parser().parse_args(["train", "--batch-size", flag, "--workers", flag])
    assert (args.batch_size, args.workers) == (expected, expected)
    assert TrainParams(train_batch_size=expected).batch == (expected or DEFAULT_BATCH_SIZE)


# --- on a card that behaves like one (tests/engine/caching_allocator.py) ---------------------

PHOTOS = ((400, 300), (448, 252), (288, 384), (252, 448))  # 4:3, 16:9, portrait 3:4 and 9:16


@pytest.fixture
def photo_project(tmp_path, monkeypatch):
    """16 photos (12 to train), landscape and portrait, no square one: the largest single image
    is not the largest padded batch."""
    from src.data import demo

    monkeypatch.setattr(demo, "MIXED_SIZES", PHOTOS)
    options = demo.DemoOptions(images=16, seed=1, mixed_sizes=True)
    return demo.make_demo_project(tmp_path / "photos", options)


def real_batches(cfg):
    """The padded shapes (batch, height, width) of every batch the run's own train loader makes
    at the chosen batch size, through the model's own data preprocessor (the padding)."""
    import copy

    from mmdet.registry import MODELS
    from mmengine.registry import init_default_scope
    from mmengine.runner import Runner

    import src.data.mmdet_dataset
    import src.engine.loops  # noqa: F401  (the run's sampler)

    init_default_scope("mmdet")
    loader_cfg = copy.deepcopy(cfg.train_dataloader.to_dict())
    loader_cfg.update(num_workers=0, persistent_workers=False, pin_memory=False)
    loader = Runner.build_dataloader(loader_cfg, seed=0)
    preprocessor = MODELS.build(copy.deepcopy(cfg.model.data_preprocessor))
    shapes = []
    for _ in range(2):  # two epochs: two shuffles
        for data in loader:
            batch, _, height, width = preprocessor(data, True)["inputs"].shape
            shapes.append((int(batch), int(height), int(width)))
    return shapes


def test_every_real_batch_of_mixed_photos_fits_the_batch_the_sizing_chose(
    photo_project, tmp_path, monkeypatch
):
    """A batch of landscape and portrait photos pads to the largest height x the largest width:
    the probe must measure that batch, not one photo repeated."""
    monkeypatch.setattr(autosize, "MIN_STEPS_PER_EPOCH", 1)  # memory limits here
    cfg = _auto_cfg(photo_project, tmp_path)
    card = CachingCard([10]).install(monkeypatch)
    card.cost = StepCost(weights=0.5, per_pixel=7.5 / (6 * 128 * 128))  # 6 fit at 128 x 128
    sized = size_the_run(cfg, "cuda:0", probe_factory=card.probe)
    budget = 0.8 * 10 * GIB
    assert 1 < sized.batch_size < 12, sized.notes  # memory chose it, not a cap
    shapes = real_batches(cfg)
    assert {b for b, _, _ in shapes} >= {sized.batch_size}
    worst = max(card.cost.step_bytes(*shape) for shape in shapes)
    assert card.cost.weights * GIB + worst <= budget, (sized.notes, shapes)


def test_a_second_sized_run_in_the_same_process_chooses_the_same_batch(
    photo_project, tmp_path, monkeypatch
):
    """The first run's blocks stay cached after it ends (nothing else would free them): the
    second sizing must not read them as used by someone else, nor as its own trial's peak."""
    monkeypatch.setattr(autosize, "MIN_STEPS_PER_EPOCH", 1)
    card = CachingCard([10]).install(monkeypatch)
    card.cost = StepCost(weights=0.5, per_image=1.0)  # the budget (8 GiB) holds 7
    first_cfg = _auto_cfg(photo_project, tmp_path / "first")
    first = size_the_run(first_cfg, "cuda:0", probe_factory=card.probe)
    weights = int(card.cost.weights * GIB)
    card.allocate(weights, "the run's model")
    for shape in real_batches(first_cfg):  # the first run trains, then its model is freed
        card.step(*shape)
    card.free(weights)
    assert card.reserved > 4 * GIB and card.allocated == 0  # what it leaves cached
    second = size_the_run(_auto_cfg(photo_project, tmp_path / "second"), "cuda:0",
                          probe_factory=card.probe)  # fmt: skip
    assert second.batch_size == first.batch_size == 7, (first.notes, second.notes)


def test_an_out_of_memory_error_after_unscale_is_followed_by_a_smaller_trial(
    demo_project, tmp_path, monkeypatch
):
    """With AMP and gradient clipping, the card runs out while clipping, after ``unscale_``:
    the next trial must train, not fail on the loss scaler's state."""
    from mmengine.optim.optimizer import amp_optimizer_wrapper

    monkeypatch.setattr(autosize, "MIN_STEPS_PER_EPOCH", 1)
    monkeypatch.setattr(amp_optimizer_wrapper, "is_cuda_available", lambda: True)
    monkeypatch.setattr(  # the CPU's loss scaler: unscale_ and its stages as on a card
        amp_optimizer_wrapper, "GradScaler", lambda **kw: torch.amp.GradScaler("cpu", **kw)
    )
    cfg = _auto_cfg(demo_project, tmp_path, device="cuda:0", grad_clip=1.0)
    assert cfg.optim_wrapper.type == "AmpOptimWrapper" and cfg.optim_wrapper.clip_grad
    card = CachingCard([10]).install(monkeypatch)
    card.clipping(monkeypatch)
    card.cost = StepCost(weights=0.5, per_image=1.0, clip=2.0)  # 8: 8.5 GiB, 10.5 clipping
    sized = size_the_run(cfg, "cuda:0", probe_factory=card.probe)
    assert card.ooms == ["clip"]  # batch 8 ran out of memory after unscale_
    assert sized.batch_size == 5, sized.notes  # 6 passes the budget (8.5 GiB > 8); 5 fits
    assert [b for b, _, _ in card.steps] == [1, 2, 4, 8, 6, 5]


def test_several_gpus_are_sized_by_the_least_free_memory_among_them(
    demo_project, tmp_path, monkeypatch
):
    """Every rank trains the same batch on its own card: the fullest card decides. Its free
    memory comes from NVML, not from a CUDA context on it."""
    monkeypatch.setattr(autosize, "MIN_STEPS_PER_EPOCH", 1)
    cfg = _auto_cfg(demo_project, tmp_path, gpus=(0, 2), amp=False)
    card = CachingCard([10, 10, 10], others=[0, 0, 6]).install(monkeypatch)
    FakeNvml(card).install(monkeypatch)
    card.cost = StepCost(weights=0.5, per_image=0.5)
    sized = size_the_run(cfg, "cuda:0", processes=2, probe_factory=card.probe)
    notes = " ".join(sized.notes)
    assert "budget 3.2 GiB" in notes, notes  # 80 % of card 2's 4 GiB
    assert sized.batch_size == 5  # 0.5 + 5 x 0.5 = 3 GiB
    assert card.contexts <= {0}


def test_the_batch_is_capped_for_16_steps_an_epoch_and_the_lr_scaled_to_it(
    demo_project, tmp_path, monkeypatch
):
    """A card with room for far more: 12 train images give batch 1 (16 steps an epoch need 16
    images per step or fewer), and the LR the zoo config's base batch was tuned for is scaled."""
    cfg = _auto_cfg(demo_project, tmp_path, lr=0.002)
    card = CachingCard([80]).install(monkeypatch)
    card.cost = StepCost(weights=0.5, per_image=0.1)
    sized = size_the_run(cfg, "cuda:0", probe_factory=card.probe)
    base = cfg.auto_scale_lr.base_batch_size
    assert sized.batch_size == 1 and "limited by" in sized.notes[-2]
    again = parse_config_text(config_to_text(cfg))
    assert again.optim_wrapper.optimizer.lr == pytest.approx(0.002 * 1 / base)
    assert again.sly_metadata.train_params["lr"] == pytest.approx(0.002 / base)
    assert not again.auto_scale_lr.enable  # scaled once, in the config: mmengine must not again
    assert any(n.startswith(f"learning rate {0.002 / base:.3g} (auto") for n in sized.notes)
    assert [b for b, _, _ in card.steps] == [1]


@pytest.mark.parametrize(
    ("images", "processes", "zoo_batch", "cap"),
    [(250, 1, 32, 15), (100_000, 1, 32, 32), (250, 2, 32, 7), (10, 1, 32, 1), (5000, 1, None, 256)],
)
def test_the_batch_cap_leaves_16_steps_an_epoch_and_keeps_to_the_zoo_batch(
    images, processes, zoo_batch, cap
):
    assert autosize.batch_cap(images, processes, zoo_batch) == cap


def test_before_the_run_the_notes_say_how_the_lr_will_follow_the_batch():
    from src.config.schedule import auto_batch_lr_note

    gpu = TrainParams(train_batch_size=None, device="cuda:0", lr=0.004)
    assert auto_batch_lr_note(gpu, 16) == (
        "learning rate 0.004 is for the zoo config's base batch 16: with the batch chosen on the "
        "GPU it is scaled in the config to 0.004 x the chosen batch / 16"
    )
    assert auto_batch_lr_note(TrainParams(train_batch_size=8, device="cuda:0"), 16) == ""
    assert auto_batch_lr_note(TrainParams(train_batch_size=None), 16) == ""  # the CPU's default
