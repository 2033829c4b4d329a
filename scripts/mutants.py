"""Does the suite bite? One-line bugs, each applied to a scratch copy of the tree, and the tests
that should catch it run there: each must fail (docs/development.md keeps the table).

    .venv/bin/python scripts/mutants.py            # every mutant (about 25 minutes on 2 cores)
    .venv/bin/python scripts/mutants.py 3 7        # some, by number

A mutant is (layer, file, the exact text, its replacement, the tests to run). The text must
occur exactly once, so a mutant that no longer applies says so instead of passing silently.
"""

from __future__ import annotations

import shutil
import subprocess
import sys
import tempfile
import time
from dataclasses import dataclass
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
COPIED = ("src", "tests", "configs", "pyproject.toml", "config.json", "requirements.txt", "docker")


@dataclass(frozen=True)
class Mutant:
    layer: str
    bug: str
    path: str
    old: str
    new: str
    tests: tuple[str, ...]


MUTANTS = (
    Mutant("engine", "the tile merge joins a tile's own boxes, not its neighbours'",
           "src/engine/tile_merge.py", "tiles[rest] != tiles[i]", "tiles[rest] == tiles[i]",
           ("tests/data/test_tiles.py",
            "tests/engine/test_sliced_training.py::test_an_object_cut_by_a_tile_border_is_predicted_once")),
    Mutant("data", "a wrong tile stride (no overlap)", "src/data/tiles.py",
           "stride = max(1, round(size * (1.0 - overlap)))", "stride = max(1, size)",
           ("tests/data/test_tiles.py",)),
    Mutant("hooks", "the stop hook never stops (a dropped check)", "src/hooks/stop.py",
           "        if not self.should_stop():\n            return\n",
           "        if True:\n            return\n",
           ("tests/app/test_session.py",)),
    Mutant("web", "the token check lets an empty token through", "src/web/access.py",
           "        if self.token is None or not given:\n            return False\n",
           "        if self.token is None or not given:\n            return True\n",
           ("tests/test_access.py",)),
    Mutant("data", "a swapped coordinate in a polygon's box", "src/data/geometry.py",
           "box = _clip_box(min(xs), min(ys), max(xs) + 1, max(ys) + 1, width, height)",
           "box = _clip_box(min(ys), min(xs), max(ys) + 1, max(xs) + 1, width, height)",
           ("tests/data/test_reader.py",)),
    Mutant("engine", "an off-by-one in the resume position", "src/engine/loops.py",
           "sampler.skip_once(done * self.dataloader.batch_size)",
           "sampler.skip_once((done - 1) * self.dataloader.batch_size)",
           ("tests/engine/test_resume.py::test_rtmdet_with_two_workers_resumed_mid_epoch_equals_a_run_without_workers",)),
    Mutant("config", "the head gets one class too many", "src/config/compose.py",
           "set_num_classes(cfg.model, len(params.classes))",
           "set_num_classes(cfg.model, len(params.classes) + 1)",
           ("tests/config/test_compose.py",)),
    Mutant("runs", "a run id may climb out of app data", "src/core/layout.py",
           '_RUN_ID = re.compile(r"[A-Za-z0-9][A-Za-z0-9._-]{0,99}")',
           '_RUN_ID = re.compile(r"[A-Za-z0-9./][A-Za-z0-9./_-]{0,99}")',
           ("tests/runs/test_layout.py",)),
    Mutant("hooks", "early stopping replays one validation too few on a resume",
           "src/hooks/early_stopping.py", "for step in sorted(s for s in history if s <= epoch):",
           "for step in sorted(s for s in history if s < epoch):",
           ("tests/app/test_options_training.py::test_early_stopping_counts_the_validations_before_a_resume",)),
    Mutant("runs", "the resume state's RNG is not saved", "src/hooks/resume_state.py",
           "        checkpoint[RNG_KEY] = get_rng_state()\n", "",
           ("tests/engine/test_resume.py::test_stop_during_validation_then_resume_is_bit_identical",)),
)  # fmt: skip


def scratch_copy(into: Path) -> None:
    for name in COPIED:
        source = ROOT / name
        if source.is_dir():
            shutil.copytree(source, into / name, ignore=shutil.ignore_patterns("__pycache__"))
        elif source.exists():
            shutil.copy2(source, into / name)


def apply(mutant: Mutant, tree: Path) -> None:
    path = tree / mutant.path
    text = path.read_text()
    if text.count(mutant.old) != 1:
        raise SystemExit(f"{mutant.path}: the mutant's text occurs {text.count(mutant.old)} times")
    path.write_text(text.replace(mutant.old, mutant.new))


def run(number: int, mutant: Mutant) -> tuple[bool, str, float]:
    """True when the tests failed (the bug was caught); the first failed test; seconds."""
    with tempfile.TemporaryDirectory(prefix=f"mutant{number}_") as scratch:
        tree = Path(scratch)
        scratch_copy(tree)
        apply(mutant, tree)
        started = time.time()
        result = subprocess.run(
            [sys.executable, "-m", "pytest", "-x", "-q", "-p", "no:cacheprovider",
             "--no-header", "-rf", *mutant.tests],
            cwd=tree, capture_output=True, text=True, timeout=3600,
        )  # fmt: skip
        failed = [line for line in result.stdout.splitlines() if line.startswith("FAILED")]
        return result.returncode == 1, (failed[0][7:] if failed else ""), time.time() - started


def main(argv: list[str]) -> int:
    chosen = [int(a) for a in argv] or list(range(1, len(MUTANTS) + 1))
    escaped = 0
    print("| # | layer | bug | caught by | s |\n|---|---|---|---|---|")
    for number in chosen:
        mutant = MUTANTS[number - 1]
        caught, test, seconds = run(number, mutant)
        escaped += not caught
        verdict = test.split(" - ")[0] if caught else "**NOT CAUGHT**"
        print(f"| {number} | {mutant.layer} | {mutant.bug} | {verdict} | {seconds:.0f} |",
              flush=True)  # fmt: skip
    return 1 if escaped else 0


if __name__ == "__main__":
    raise SystemExit(main(sys.argv[1:]))
