"""What slicing will cost is known before anything is cut (issue 35): the tiles and the bytes of
each split, counted from the images' sizes and boxes; a split past the limits is refused with
those numbers (the limits can be raised); and an interrupted cut leaves no partial file in the
cache."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import textwrap
from pathlib import Path

import cv2
import numpy as np
import pytest

from src.data.tiles import (
    Slicing,
    cut_tiles,
    estimate_tiles,
    load_tiled_split,
    slice_split,
    tile_file_bytes,
    windows,
)

ROOT = Path(__file__).resolve().parents[2]


def _image(n: int, width: int, height: int, boxes) -> dict:
    instances = [{"bbox": list(map(float, b)), "bbox_label": 0, "ignore_flag": 0} for b in boxes]
    return {"img_path": f"/nowhere/{n}.png", "img_id": n, "item_name": f"ds/{n}.png",
            "width": width, "height": height, "instances": instances}  # fmt: skip


def _split() -> list[dict]:
    rng = np.random.default_rng(0)
    big = [[x, y, x + 25, y + 18] for x, y in rng.integers(0, 3900, (30, 2)) if y < 2950]
    return [
        _image(1, 4000, 3000, big),
        _image(2, 1000, 180, [[500, 10, 530, 40]]),  # one row of tiles, 180 px high
        _image(3, 200, 150, [[10, 10, 50, 50]]),  # no larger than a tile: its own file
        _image(4, 900, 700, []),  # no object at all
    ]


@pytest.mark.parametrize(
    ("train", "empty"), [(False, 0.0), (True, 0.0), (True, 1.0)], ids=["val", "train", "all"]
)
def test_the_estimate_is_what_slicing_makes_counted_without_cutting(
    train, empty, tmp_path, monkeypatch
):
    monkeypatch.setattr("src.data.tiles.image_digest", lambda path: Path(path).stem)
    # every object that touches a tile counts there (a tiny visible fraction): the estimate's
    # "a tile with an object" is then exactly slicing's
    slicing = Slicing(size=256, overlap=0.25, empty=empty, min_visible=1e-6)
    data_list = _split()
    estimate = estimate_tiles(data_list, slicing, train=train)
    tiled = slice_split(data_list, slicing, tmp_path, train=train)
    made = tiled.stats
    assert (estimate.tiles, estimate.full_images, estimate.empty_dropped) == (
        made.tiles, made.full_images, made.empty_dropped,
    )  # fmt: skip
    assert estimate.tiles + estimate.full_images == len(tiled.data_list)
    cut = [w for _, windows in tiled.cuts.values() for w in windows]
    assert estimate.files == made.files == len(cut)
    bound = sum(tile_file_bytes(x2 - x1, y2 - y1) for x1, y1, x2, y2 in cut)
    assert estimate.bytes == made.bytes == bound
    assert not any(tmp_path.iterdir())  # nothing cut


def test_the_estimate_of_empty_tiles_kept_is_their_expected_share(tmp_path, monkeypatch):
    monkeypatch.setattr("src.data.tiles.image_digest", lambda path: Path(path).stem)
    data_list = _split()
    slicing = Slicing(size=256, overlap=0.25, empty=0.3, min_visible=1e-6)
    with_objects = estimate_tiles(data_list, Slicing(size=256, overlap=0.25, empty=0.0), True)
    every = estimate_tiles(data_list, Slicing(size=256, overlap=0.25, empty=1.0), True)
    estimate = estimate_tiles(data_list, slicing, train=True)
    expected = with_objects.files + 0.3 * (every.files - with_objects.files)
    assert abs(estimate.files - expected) <= 1
    made = slice_split(data_list, slicing, tmp_path, train=True).stats.tiles
    assert abs(estimate.tiles - made) <= 0.2 * made  # a hash keeps about that share


def test_the_bytes_bound_holds_for_the_files_cut(tmp_path):
    # noise: the worst case for PNG (nothing to compress)
    noise = np.random.default_rng(1).integers(0, 256, (700, 900, 3), np.uint8)
    source = tmp_path / "noise.png"
    cv2.imwrite(str(source), noise)
    cut = [list(w) for w in windows(900, 700, 256, 0.2)]
    folder = tmp_path / "tiles"
    cut_tiles(str(source), folder, cut)
    sizes = [p.stat().st_size for p in folder.glob("*.png")]
    bound = sum(tile_file_bytes(x2 - x1, y2 - y1) for x1, y1, x2, y2 in cut)
    assert len(sizes) == len(cut)
    assert sum(sizes) <= bound <= 1.05 * sum(sizes)  # an upper bound, and a close one for noise


def test_the_cost_of_the_issues_settings_is_counted_in_no_time():
    # issue 35: tiles of 32 px at overlap 0.9 on a 4000x3000 image: 1324 x 991 windows
    info = _image(1, 4000, 3000, [[100, 100, 120, 120]])
    estimate = estimate_tiles([info], Slicing(size=32, overlap=0.9), train=False)
    assert estimate.files == 1324 * 991 == len(windows(4000, 3000, 32, 0.9))
    assert estimate.bytes >= estimate.files * 32 * 32 * 3


def _dataset(project: Path, cache: Path, **slicing):
    from mmengine.registry import init_default_scope

    from src.data.mmdet_dataset import SuperviselyDataset

    init_default_scope("mmdet")
    return SuperviselyDataset(
        project_dir=str(project), classes=["square", "triangle", "circle"], datasets=["val"],
        cache_dir=str(cache), slicing=slicing, pipeline=[], test_mode=True,
        serialize_data=False,
    )  # fmt: skip


@pytest.fixture(scope="module")
def large_project(tmp_path_factory) -> Path:
    from src.data.demo import LARGE_OPTIONS, DemoOptions, make_demo_project

    path = tmp_path_factory.mktemp("large") / "project"
    return make_demo_project(path, DemoOptions(images=2, seed=1, **LARGE_OPTIONS))


def test_a_split_past_the_limits_is_refused_with_the_numbers_before_anything_is_cut(
    large_project, tmp_path
):
    from src.data.reader import DatasetError

    cache = tmp_path / "cache"
    # the issue's settings: 1.3 million tiles of one 4000x3000 image, refused by the default
    with pytest.raises(DatasetError) as refused:
        _dataset(large_project, cache, size=32, overlap=0.9)
    message = str(refused.value)
    assert "1,312,084 tiles" in message and "slice_max_tiles" in message, message
    assert "--slice-max-tiles" in message and "slicing.max_tiles" in message, message
    assert not (cache / "tiles").exists() and not list(cache.glob("tiles_*"))
    # a limit on the bytes, too; raised, the same split is cut
    with pytest.raises(DatasetError, match=r"slice_max_gb"):
        _dataset(large_project, cache, size=256, overlap=0.25, max_gb=0.001)
    with pytest.raises(DatasetError, match=r"336 tiles .* more than slice_max_tiles \(300\)"):
        _dataset(large_project, cache, size=256, overlap=0.25, max_tiles=300)
    dataset = _dataset(large_project, cache, size=256, overlap=0.25, max_tiles=400)
    assert (dataset.tile_stats.tiles, dataset.tile_stats.full_images) == (336, 1)
    assert dataset.tile_stats.files == 336
    assert dataset.tile_stats.bytes == 336 * tile_file_bytes(256, 256)


_KILLED_MID_WRITE = """
import sys, time, pathlib
from src.data.tiles import cut_tiles
from src.runs.atomic_files import atomic_path

with atomic_path(pathlib.Path(sys.argv[3]) / "tiles_x.pkl") as tmp:
    tmp.write_bytes(b"a partial data list")
    write = pathlib.Path.write_bytes
    def write_then_hang(self, data):
        write(self, data[: len(data) // 2])
        print("written", flush=True)
        time.sleep(600)
    pathlib.Path.write_bytes = write_then_hang
    cut_tiles(sys.argv[1], sys.argv[2], [[0, 0, 256, 256], [256, 0, 512, 256]])
"""


def test_an_interrupted_cut_leaves_no_partial_file_in_the_cache(tmp_path):
    image = np.random.default_rng(2).integers(0, 256, (256, 512, 3), np.uint8)
    source = tmp_path / "image.png"
    cv2.imwrite(str(source), image)
    cache = tmp_path / "cache"
    folder = cache / "tiles" / "image"
    child = subprocess.Popen(
        [sys.executable, "-c", textwrap.dedent(_KILLED_MID_WRITE), str(source), str(folder),
         str(cache)],
        cwd=ROOT, stdout=subprocess.PIPE, text=True,
    )  # fmt: skip
    try:
        assert child.stdout.readline().strip() == "written"  # (EOF: it died before writing)
    finally:
        child.send_signal(signal.SIGKILL)  # killed as the agent or the OOM killer kills
        child.wait(30)
    left = sorted(p.name for p in cache.rglob(".*tmp*"))
    assert len(left) == 2, left  # the half tile and the data list being written

    # a live writer's temporary file is its own: left alone
    ours = cache / f".tiles_y.pkl.tmp{os.getpid()}_1"
    ours.write_bytes(b"being written")
    cut = [[0, 0, 256, 256], [256, 0, 512, 256]]
    assert cut_tiles(str(source), folder, cut) == 2
    load_tiled_split([], Slicing(size=256), cache, "key", train=False)
    assert sorted(p.name for p in cache.rglob(".*tmp*")) == [ours.name]
    for x1, y1, x2, y2 in cut:
        tile = cv2.imread(str(folder / f"{x1}_{y1}_{x2 - x1}x{y2 - y1}.png"))
        assert np.array_equal(tile, image[y1:y2, x1:x2])
