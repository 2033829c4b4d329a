"""Class balance: mmdet's ClassBalancedDataset around the train set, as mmdet spells it in the
config (the Editor shows it), kept through our composition, counted in the dry run."""

from __future__ import annotations

from collections import Counter

import numpy as np

from src.config.params import TrainParams
from src.config.text import config_to_text
from tests.helpers import small_cfg


def test_the_composed_config_wraps_the_train_set_as_mmdet_spells_it(demo_project, tmp_path):
    cfg = small_cfg(demo_project, tmp_path / "run", class_balance=0.3)
    train = cfg.train_dataloader.dataset
    assert (train.type, train.oversample_thr) == ("ClassBalancedDataset", 0.3)
    assert train.dataset.type == "SuperviselyDataset"
    # the serving app reads the classes from train_dataloader.dataset.selected_classes
    assert train.selected_classes == train.dataset.selected_classes
    assert cfg.val_dataloader.dataset.type == "SuperviselyDataset"  # validation is not balanced
    assert "type='ClassBalancedDataset'" in config_to_text(cfg)
    assert small_cfg(demo_project, tmp_path / "off").train_dataloader.dataset.type == (
        "SuperviselyDataset"
    )


def test_an_images_repeats_draw_their_own_augmentations_reproducibly(mixed_project, tmp_path):
    from mmdet.registry import DATASETS
    from mmengine.registry import init_default_scope

    import src.data.mmdet_dataset  # noqa: F401
    from src.data.sample_rng import SampleIndex
    from src.engine import patches

    patches.apply()
    cfg = small_cfg(mixed_project, tmp_path / "run", class_balance=0.9, augmentation="medium")
    init_default_scope("mmdet")
    dataset = DATASETS.build({**cfg.train_dataloader.dataset, "selected_classes": None})
    dataset.full_init()
    counts = Counter(dataset.repeat_indices)
    image, _ = counts.most_common(1)[0]
    assert counts[image] >= 2 and len(dataset) > len(dataset.dataset)
    first, second = [i for i, ori in enumerate(dataset.repeat_indices) if ori == image][:2]

    def pixels(index: int) -> np.ndarray:
        return dataset[SampleIndex(index, 3, 1)]["inputs"].numpy()

    assert not np.array_equal(pixels(first), pixels(second))  # two repeats, two draws
    assert np.array_equal(pixels(first), pixels(first))  # each reproducible (resume)


def test_class_balance_outside_its_range_is_refused():
    problems = TrainParams(classes=("a",), class_balance=1.5).validate()
    assert any("class_balance must be from 0 (off) to 1" in p for p in problems)
