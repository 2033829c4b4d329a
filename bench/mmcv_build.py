"""mmcv's compile flags: what debug info (-g) and -O3 cost the build, and what dropping them costs
the ops we run (NMS, RoIAlign), measured side by side in one run.

``make setup`` compiles mmcv 2.1.0's ops from the PyPI sdist with Python's own CFLAGS
(``-DNDEBUG -g -fwrapv -O3 -Wall``) unless told otherwise. This bench builds the same small
extension — mmcv's own NMS and RoIAlign sources (device dispatch + CPU kernels) and a binding of
a few lines — once per flag set, with the same compiler and torch headers, timing each compile;
then it times the ops of every build, alternating builds, and prints ratios to the Python-default
build. Nothing here changes the installed mmcv.

Run: ``.venv/bin/python bench/mmcv_build.py`` (downloads the sdist once from PyPI into
``.cache/mmcv-sdist``).
"""

from __future__ import annotations

import hashlib
import re
import statistics
import subprocess
import sys
import sysconfig
import tarfile
import tempfile
import time
import urllib.request
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
INDEX = "https://pypi.org/simple/mmcv/"  # the package registry, as pip reads it (PEP 503)
SDIST = ROOT / ".cache" / "mmcv-sdist" / "mmcv-2.1.0.tar.gz"
# The ops we time, and more of mmcv's op sources (dispatch + CPU kernel pairs: 14 of the full
# build's 77 files), so that compile time is measured on a sample where a precompiled header pays
# off as it does in the whole build.
SOURCES = (
    "nms.cpp", "cpu/nms.cpp", "roi_align.cpp", "cpu/roi_align.cpp",
    "deform_conv.cpp", "cpu/deform_conv.cpp", "modulated_deform_conv.cpp",
    "cpu/modulated_deform_conv.cpp", "bbox_overlaps.cpp", "cpu/bbox_overlaps_cpu.cpp",
    "roi_align_rotated.cpp", "cpu/roi_align_rotated.cpp", "nms_rotated.cpp", "cpu/nms_rotated.cpp",
)  # fmt: skip
BINDING = """
#include <torch/extension.h>

#include "pytorch_cpp_helper.hpp"
Tensor nms(Tensor boxes, Tensor scores, float iou_threshold, int offset);
void roi_align_forward(Tensor input, Tensor rois, Tensor output, Tensor argmax_y,
                       Tensor argmax_x, int aligned_height, int aligned_width,
                       float spatial_scale, int sampling_ratio, int pool_mode, bool aligned);
PYBIND11_MODULE(TORCH_EXTENSION_NAME, m) {
  m.def("nms", &nms);
  m.def("roi_align_forward", &roi_align_forward);
}
"""


PCH = "+pch"  # marks the flag set that precompiles torch's headers first, as setup.sh does


def flag_sets() -> dict[str, list[str]]:
    python_default = sysconfig.get_config_var("CFLAGS").split()
    no_debug = [f for f in python_default if f != "-g"] + ["-g0"]
    return {
        "python default (-g -O3)": python_default,
        "-g0 -O3": no_debug,
        "-g0 -O3 + torch PCH (setup.sh)": [*no_debug, PCH],
        "-g0 -O2": [f for f in python_default if f not in ("-g", "-O3")] + ["-g0", "-O2"],
        # what a plain CFLAGS=-g0 gives with setuptools >= 72: it replaces Python's CFLAGS
        "-g0 alone (no -O)": ["-g0"],
    }


def sources(workdir: Path) -> Path:
    """mmcv's ``ops/csrc`` from the sdist (downloaded once)."""
    if not SDIST.is_file():
        with urllib.request.urlopen(INDEX, timeout=60) as response:
            page = response.read().decode()
        match = re.search(r'href="([^"]*/mmcv-2\.1\.0\.tar\.gz)#sha256=([0-9a-f]+)"', page)
        if not match:
            raise SystemExit(f"mmcv-2.1.0.tar.gz is not listed on {INDEX}")
        with urllib.request.urlopen(match.group(1), timeout=300) as response:
            data = response.read()
        if hashlib.sha256(data).hexdigest() != match.group(2):
            raise SystemExit("the downloaded sdist does not match the index's sha256")
        SDIST.parent.mkdir(parents=True, exist_ok=True)
        SDIST.with_suffix(".part").write_bytes(data)
        SDIST.with_suffix(".part").rename(SDIST)
    with tarfile.open(SDIST) as tar:
        members = [m for m in tar.getmembers() if "/mmcv/ops/csrc/" in m.name]
        tar.extractall(workdir, members=members, filter="data")
    return next(workdir.glob("mmcv-*/mmcv/ops/csrc"))


def build(name: str, flags: list[str], csrc: Path, workdir: Path):
    from torch.utils.cpp_extension import load

    # written once: a rewritten file would make ninja compile again when a later process loads it
    binding = workdir / f"{name}_binding.cpp"
    if not binding.exists():
        binding.write_text(BINDING)
    build_dir = workdir / name
    build_dir.mkdir(exist_ok=True)
    copies = []
    for source in SOURCES:  # unique names: ninja names objects after the file
        copy = workdir / f"{name}_{source.replace('/', '_')}"
        if not copy.exists():
            copy.write_text((csrc / "pytorch" / source).read_text())
        copies.append(str(copy))
    start = time.perf_counter()
    if PCH in flags:
        flags = [f for f in flags if f != PCH]
        flags += ["-include", precompile(name, flags, workdir), "-Winvalid-pch"]
    module = load(
        name=name,
        sources=[*copies, str(binding)],
        extra_include_paths=[str(csrc / "common")],
        extra_cflags=flags,
        build_directory=str(build_dir),
        verbose=False,
    )
    return module, time.perf_counter() - start


def precompile(name: str, flags: list[str], workdir: Path) -> str:
    """torch's headers as a gcc precompiled header, with the macros and options ``load`` compiles
    with (gcc ignores a .gch that does not match; -Winvalid-pch would say so)."""
    from torch.utils.cpp_extension import include_paths

    header = workdir / f"{name}_pch.h"
    gch = Path(f"{header}.gch")
    if not gch.exists():
        header.write_text("#include <torch/types.h>\n#include <ATen/ATen.h>\n")
        subprocess.run(
            ["c++", f"-DTORCH_EXTENSION_NAME={name}", "-DTORCH_API_INCLUDE_EXTENSION_H",
             *(f"-isystem{p}" for p in include_paths()),
             f"-isystem{sysconfig.get_paths()['include']}", "-fPIC", "-std=c++20", *flags,
             "-x", "c++-header", str(header), "-o", str(gch)],
            check=True, capture_output=True,
        )  # fmt: skip
    return str(header)


def op_inputs():
    import torch

    g = torch.Generator().manual_seed(0)
    xy = torch.rand(6000, 2, generator=g) * 800
    wh = torch.rand(6000, 2, generator=g) * 120 + 8
    boxes = torch.cat([xy, xy + wh], 1)
    scores = torch.rand(6000, generator=g)
    feats = torch.randn(2, 256, 100, 168, generator=g)
    idx = torch.randint(0, 2, (512, 1), generator=g).float()
    rois = torch.cat([idx, boxes[:512] / 4], 1)
    return boxes, scores, feats, rois


def run_ops(module, inputs) -> float:
    import torch

    boxes, scores, feats, rois = inputs
    start = time.perf_counter()
    module.nms(boxes, scores, 0.5, 0)
    out = feats.new_zeros((rois.shape[0], feats.shape[1], 7, 7))
    argmax = feats.new_zeros((0,))
    module.roi_align_forward(feats, rois, out, argmax, argmax, 7, 7, 0.25, 0, 1, True)
    torch.testing.assert_close(out.sum().isfinite(), torch.tensor(True))
    return time.perf_counter() - start


def time_in_process(name: str, flags: list[str], csrc: Path, workdir: Path) -> float:
    """Median op time of one build, in a process of its own: mmcv's device registry is a static
    template instance, which the dynamic linker shares between all loaded copies (GNU unique
    symbols), so two builds in one process would run the same kernels."""
    code = (
        "import statistics, sys; from pathlib import Path; sys.path.insert(0, sys.argv[1]);"
        "import mmcv_build as b; import torch; torch.set_num_threads(1);"
        "m, _ = b.build(sys.argv[2], sys.argv[3].split(), Path(sys.argv[4]), Path(sys.argv[5]));"
        "x = b.op_inputs(); b.run_ops(m, x);"
        "print(statistics.median(b.run_ops(m, x) for _ in range(3)))"
    )
    done = subprocess.run(
        [sys.executable, "-c", code, str(Path(__file__).parent), name, " ".join(flags),
         str(csrc), str(workdir)],
        capture_output=True, text=True, check=True,
    )  # fmt: skip
    return float(done.stdout.strip().splitlines()[-1])


def main() -> int:
    with tempfile.TemporaryDirectory() as tmp:
        workdir = Path(tmp)
        csrc = sources(workdir)
        builds: dict[str, tuple[str, list[str], float]] = {}
        for i, (label, flags) in enumerate(flag_sets().items()):
            name = f"mmcv_ops_bench_{i}"
            _, seconds = build(name, flags, csrc, workdir)
            builds[label] = (name, flags, seconds)
            print(f"built {label:<32} in {seconds:6.1f} s   flags: {' '.join(flags)}", flush=True)
        times: dict[str, list[float]] = {label: [] for label in builds}
        for _ in range(5):  # alternate builds so machine noise hits all alike
            for label, (name, flags, _) in builds.items():
                times[label].append(time_in_process(name, flags, csrc, workdir))
    base_label = next(iter(builds))
    base_build = builds[base_label][2]
    base_ops = statistics.median(times[base_label])
    print()
    print(f"{'flags':<32} {'compile':>9} {'ratio':>6} {'NMS+RoIAlign':>13} {'ratio':>6}")
    for label, (_, _, seconds) in builds.items():
        ops = statistics.median(times[label])
        print(
            f"{label:<32} {seconds:8.1f}s {seconds / base_build:6.2f} {ops * 1000:11.1f}ms "
            f"{ops / base_ops:6.2f}"
        )
    print(
        "\nratios: to the python-default build, same run. Op time: NMS (6000 boxes) + RoIAlign "
        "(512 RoIs, 7x7, 256 channels), one thread, each build in its own process, median of 5 "
        "alternating rounds"
    )
    return 0


if __name__ == "__main__":
    sys.exit(main())
