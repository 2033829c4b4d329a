"""The Docker image's recipe stays consistent with the project: linted by hadolint, one pin per
package, overrides that are explicit, torch/CUDA/mmcv agreeing, the manifest's entrypoint."""

from __future__ import annotations

import json
import re
import shlex
import subprocess
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent


def _load_image_requirements():
    """docker/ is not a package (a package named ``docker`` would shadow docker-py)."""
    import importlib.util

    spec = importlib.util.spec_from_file_location(
        "image_requirements", ROOT / "docker" / "image_requirements.py"
    )
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


_module = _load_image_requirements()
_name, image_requirements = _module._name, _module.image_requirements
DOCKERFILE = (ROOT / "docker" / "Dockerfile").read_text()


def _pins(lines: list[str]) -> dict[str, str]:
    pins = {}
    for line in lines:
        name = _name(line)
        if name:
            assert name not in pins, f"{name} is pinned twice"
            pins[name] = line.split("==", 1)[1].split("#", 1)[0].strip()
    return pins


def test_dockerfile_passes_hadolint():
    hadolint = Path(sys.executable).parent / "hadolint"
    result = subprocess.run(
        [str(hadolint), "--no-color", str(ROOT / "docker" / "Dockerfile")],
        capture_output=True,
        text=True,
    )
    assert result.returncode == 0, result.stdout + result.stderr


def test_image_pins_are_requirements_plus_explicit_overrides():
    base = _pins((ROOT / "requirements.txt").read_text().splitlines())
    override_lines = (ROOT / "docker" / "requirements-overrides.txt").read_text().splitlines()
    overrides = _pins(override_lines)
    image = _pins(image_requirements())
    for line in override_lines:
        name = _name(line)
        if name is None:
            continue
        if "image-only" in line:
            assert name not in base, f"{name} is in requirements.txt: not image-only"
        else:
            assert name in base, f"override {name} replaces nothing in requirements.txt"
            assert overrides[name] != base[name], f"override {name} pins the same version"
    for name, version in base.items():
        assert image[name] == overrides.get(name, version)
    assert set(image) == set(base) | set(overrides)
    for core in ("mmdet", "mmengine", "supervisely", "pycocotools"):
        assert image[core] == base[core], f"{core} must be the version the tests ran"


def test_torch_cuda_and_mmcv_agree():
    torch = re.search(r"^ARG TORCH_VERSION=(\d+)\.(\d+)\.\d+$", DOCKERFILE, re.M)
    index = re.search(r"mmcv/dist/cu(\d+)/torch(\d+)\.(\d+)/index\.html", DOCKERFILE)
    cuda = re.search(r"^FROM nvidia/cuda:(\d+)\.(\d+)\.\d+-", DOCKERFILE, re.M)
    assert torch and index and cuda
    assert index.group(2, 3) == torch.group(1, 2), "the mmcv wheel index is for another torch"
    assert index.group(1) == "".join(cuda.group(1, 2)), "the mmcv wheels are for another CUDA"
    assert "mmcv==2.1.0" in DOCKERFILE  # mmdet 3.3 refuses mmcv >= 2.2
    assert image_requirements_pin("torchvision").startswith("0.16."), "torchvision of torch 2.1"


def image_requirements_pin(name: str) -> str:
    return _pins(image_requirements())[name]


def test_image_runs_the_manifest_entrypoint():
    manifest = json.loads((ROOT / "config.json").read_text())
    cmd = json.loads(re.search(r"^CMD (\[.*\])$", DOCKERFILE, re.M).group(1))
    assert cmd == shlex.split(manifest["entrypoint"])
    assert f"EXPOSE {manifest['port']}" in DOCKERFILE
