"""The validation loader's workers (issue 34, item 9): validation runs between epochs and its
persistent workers idle the rest of the run, each holding a copy of the dataset; it needs no
augmentation. Half the training loader's (rounded up), never more."""

from __future__ import annotations

import pytest

from tests.helpers import small_cfg


@pytest.mark.parametrize(("train", "val"), [(8, 4), (3, 2), (1, 1), (0, 0)])
def test_the_val_loader_has_half_the_train_loaders_workers(train, val, tmp_path):
    cfg = small_cfg(tmp_path / "project", tmp_path / "run", num_workers=train)
    assert cfg.train_dataloader.num_workers == train
    assert (cfg.val_dataloader.num_workers, cfg.val_dataloader.persistent_workers) == (val, val > 0)
    assert cfg.test_dataloader.num_workers == val


def test_the_rule_is_one_function_that_sizing_can_apply():
    from src.config.compose_data import val_loader_workers

    assert [val_loader_workers(n) for n in (0, 1, 2, 7, 8)] == [0, 1, 1, 4, 4]
