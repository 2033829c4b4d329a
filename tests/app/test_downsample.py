"""A long run keeps its curves in bounded memory: the session history, the charts, the log tail."""

from __future__ import annotations

from src.hooks.metrics import TrainProgress, ValResult
from src.training.downsample import MAX_POINTS, thin_older


def _progress(it: int) -> TrainProgress:
    return TrainProgress(
        epoch=it // 100 + 1, max_epochs=1000, iteration=it, max_iterations=100_000,
        batch_index=it % 100, batches_per_epoch=100, losses={"loss": 1 / it}, lr=0.01,
    )  # fmt: skip


def test_thin_older_keeps_the_ends_and_stays_bounded():
    points: list[int] = []
    for i in range(50_000):
        points = thin_older([*points, i], limit=100)
        assert len(points) <= 100
    assert points[0] == 0 and points[-1] == 49_999
    assert points[-50:] == list(range(49_950, 50_000))  # the newest half dense
    assert points == sorted(points)


def test_session_history_is_bounded_and_keeps_every_validation():
    from src.training.session import _Recorder

    recorder = _Recorder()
    for it in range(1, 20_001):
        recorder.on_train_iter(_progress(it))
        if it % 100 == 0:
            recorder.on_val(ValResult(it // 100, it, {"bbox_mAP": 0.1}, {}))
    train = recorder.history["train"]
    assert len(train) <= MAX_POINTS
    assert train[0]["iter"] == 1 and train[-1]["iter"] == 20_000
    assert len(recorder.history["val"]) == 200  # the best epoch is always found


def test_chart_series_are_bounded_and_end_at_the_newest_point():
    from src.ui.charts import Chart

    chart = Chart("Losses", "test_bounded_chart")
    for it in range(1, 3 * MAX_POINTS):
        chart.add("loss", it, 1 / it, send=False)
    chart.send()
    data = chart.series()["loss"]
    assert len(data) <= MAX_POINTS
    assert data[0] == (1, 1.0) and data[-1][0] == 3 * MAX_POINTS - 1


def test_the_log_tail_reads_only_the_end_of_a_big_log(tmp_path):
    from src.ui.training import _tail_lines

    log = tmp_path / "run.log"
    with open(log, "w", encoding="utf-8") as f:
        for i in range(200_000):
            f.write(f"line {i}\n")
    assert _tail_lines(log, 3) == ["line 199997", "line 199998", "line 199999"]
    short = tmp_path / "short.log"
    short.write_text("a\nb\n")
    assert _tail_lines(short, 8) == ["a", "b"]
