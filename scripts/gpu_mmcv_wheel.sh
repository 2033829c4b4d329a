#!/usr/bin/env bash
# mmcv 2.1.0 with its CUDA ops, compiled HERE on the CPU for the lent GPU machines' image (issue 22,
# part 3), so that scripts/gpu_setup.sh installs it there instead of compiling for ~270 s.
#
# The target is what the image holds (docs/gpu.md): CPython 3.12, torch 2.11.0+cu130 (PyPI's
# build), a Hopper card (sm 9.0). Everything the compile needs comes from the package registry:
# a Python 3.12 venv with that torch (its headers and libraries), and CUDA 13.0's nvcc, headers
# and libraries from the `cuda-toolkit` wheels (nvidia/cu13/); no GPU is needed to compile.
#
# The wheel lands in .cache/gpu-mmcv/<KEY>/ (git-ignored), KEY spelled as gpu_setup.sh spells it
# from the machine (torch<version with + as ->-cuda<torch's CUDA>-sm<arch>), and is reused when
# it is there (FORCE=1 builds again). scripts/gpu_wheels.sh calls this and carries the result in
# .whl/mmcv-cuda/<KEY>/. The build venv stays in .cache/gpu-build/ (about 5 GB, git-ignored).
#
# Then a rehearsal on this CPU: the wheel is installed into a scratch --target folder and its
# compiled extension is loaded by that torch (every CUDA library it links must resolve) and NMS runs
# on the CPU; the build log must show every CUDA file compiled to sm <arch> machine code. Whether
# the kernels run is for the GPU machine to say: gpu_setup.sh's smoke test runs NMS and RoIAlign there.
set -euo pipefail
cd "$(dirname "$0")/.."
MMCV_VERSION="2.1.0"
TORCH_SPEC="${GPU_TORCH:-torch==2.11.0}"
# the CUDA torch 2.11.0 pins; crt and nvvm named so that nvcc's unpinned needs stay at 13.0 (with
# 13.5's cicc, ptxas 13.0 refuses the PTX: "Unsupported .version 9.5"); cccl has <nv/target>
CUDA_SPEC="${GPU_CUDA_TOOLKIT:-cuda-toolkit[nvcc,cccl,crt,nvvm]==13.0.2}"
ARCH="${GPU_ARCH:-9.0}"
BUILD="${GPU_BUILD_DIR:-.cache/gpu-build}"
CACHE=".cache/gpu-mmcv"
start=$SECONDS
say() { printf '==> [gpu-mmcv %s] %s\n' "$(date +%H:%M:%S)" "$*"; }

# Python 3.12: on PATH, or one of pyenv's versions (whose shim refuses when 3.12 is not selected)
PY312=""
for candidate in "${PY312_BIN:-}" python3.12 "$(pyenv root 2>/dev/null)"/versions/3.12*/bin/python3.12; do
    [[ -n "$candidate" ]] && "$candidate" -c 'import sys; assert sys.version_info[:2] == (3, 12)' \
        2>/dev/null && { PY312="$candidate"; break; }
done
[[ -n "$PY312" ]] || { echo "gpu-mmcv: no Python 3.12 here (set PY312_BIN): the image's wheels are cp312" >&2; exit 1; }

VENV="$(realpath -m "$BUILD/venv")"
if [[ ! -x "$VENV/bin/python" ]]; then
    say "a Python 3.12 venv with $TORCH_SPEC and $CUDA_SPEC in $VENV (about 5 GB)"
    "$PY312" -m venv "$VENV"
fi
"$VENV/bin/python" -m pip install -q --disable-pip-version-check "$TORCH_SPEC" "$CUDA_SPEC" \
    "setuptools<81" wheel ninja numpy packaging 2> >(grep -v "is ignored: it is neither" >&2)
read -r TORCH_VERSION TORCH_CUDA < <("$VENV/bin/python" -W ignore -c \
    'import torch; print(torch.__version__, torch.version.cuda)')
[[ "$TORCH_CUDA" != None ]] || { echo "gpu-mmcv: $TORCH_SPEC here is a CPU build; a CUDA build is needed" >&2; exit 1; }
KEY="torch${TORCH_VERSION//+/-}-cuda$TORCH_CUDA-sm${ARCH//./}"
OUT_DIR="$CACHE/$KEY"
if [[ -z "${FORCE:-}" ]] && compgen -G "$OUT_DIR/mmcv-$MMCV_VERSION-*.whl" >/dev/null; then
    say "reusing $(ls "$OUT_DIR"/mmcv-*.whl) (FORCE=1 builds it again)"
else
    # CUDA_HOME as torch's extension builder expects it (bin/nvcc, include/, lib64/libcudart.so),
    # made of links into the wheels' nvidia/cu13 folder, which has lib/ and only versioned .so files
    NV="$("$VENV/bin/python" -c 'import nvidia, os; print(os.path.join(list(nvidia.__path__)[0], "cu13"))')"
    CUDA_HOME="$(realpath -m "$BUILD/cuda")"
    rm -rf "$CUDA_HOME" && mkdir -p "$CUDA_HOME/lib64"
    for d in bin include nvvm; do ln -s "$NV/$d" "$CUDA_HOME/$d"; done
    ln -s "$NV"/lib/* "$CUDA_HOME/lib64/"
    ln -s "$NV/lib/libcudart.so.${TORCH_CUDA%%.*}" "$CUDA_HOME/lib64/libcudart.so"
    "$CUDA_HOME/bin/nvcc" --version | tail -n 1

    SDIST="$BUILD/mmcv-$MMCV_VERSION.tar.gz"
    [[ -f "$SDIST" ]] || "$VENV/bin/python" scripts/mmcv_sdist.py "$SDIST" "$MMCV_VERSION"
    say "compiling mmcv $MMCV_VERSION's CPU and CUDA ops for sm $ARCH ($(nproc) jobs; about 25 min on 2 cores)"
    # Python's own CFLAGS without -g (debug info is most of a compile; see scripts/setup.sh)
    CFLAGS_="$("$VENV/bin/python" -c 'import sysconfig; print(sysconfig.get_config_var("CFLAGS"))' | sed -e 's/ -g / /g') -g0"
    WHEELS="$BUILD/wheels" && rm -rf "$WHEELS" && mkdir -p "$WHEELS"
    CUDA_HOME="$CUDA_HOME" PATH="$CUDA_HOME/bin:$VENV/bin:$PATH" TORCH_CUDA_ARCH_LIST="$ARCH" \
        FORCE_CUDA=1 MMCV_WITH_OPS=1 MAX_JOBS="$(nproc)" CFLAGS="$CFLAGS_" CXXFLAGS="$CFLAGS_" \
        "$VENV/bin/python" -m pip wheel -v --disable-pip-version-check --no-index --no-deps \
        --no-build-isolation --no-cache-dir -w "$WHEELS" "$SDIST" > "$BUILD/build.log" 2>&1 \
        || { tail -n 40 "$BUILD/build.log" >&2; echo "gpu-mmcv: build failed; log: $BUILD/build.log" >&2; exit 1; }
    # every CUDA file compiled for the target arch alone, as machine code (no PTX left to JIT there)
    targets="$(grep -o -- '-gencode=arch=compute_[0-9]*,code=[a-z_0-9]*' "$BUILD/build.log" | sort -u)"
    [[ "$targets" == "-gencode=arch=compute_${ARCH//./},code=sm_${ARCH//./}" ]] \
        || { echo "gpu-mmcv: unexpected CUDA targets in $BUILD/build.log: $targets" >&2; exit 1; }
    rm -rf "$OUT_DIR" && mkdir -p "$OUT_DIR"
    cp "$WHEELS"/mmcv-*.whl "$OUT_DIR/"
fi

say "rehearsal: load the wheel's extension with $TORCH_VERSION on this CPU"
SCRATCH="$(mktemp -d)"
trap 'rm -rf "$SCRATCH"' EXIT
"$VENV/bin/python" -m pip install -q --disable-pip-version-check --no-index --no-deps --no-compile \
    --target "$SCRATCH" "$OUT_DIR"/mmcv-*.whl
(cd "$SCRATCH" && "$VENV/bin/python" -m pip install -q --disable-pip-version-check addict \
    yapf==0.40.1 mmengine==0.10.7 opencv-python-headless --target "$SCRATCH/deps" \
    2> >(grep -v "is ignored: it is neither" >&2) >/dev/null)
PYTHONPATH="$SCRATCH:$SCRATCH/deps" "$VENV/bin/python" -W ignore - <<'PY'
import sys
import torch
from mmcv.ops import nms
import mmcv._ext  # noqa: F401  the compiled ops: every CUDA library they link must resolve

boxes = torch.tensor([[0, 0, 10, 10], [1, 1, 11, 11], [50, 50, 60, 60]], dtype=torch.float)
kept = nms(boxes, torch.tensor([0.9, 0.8, 0.7]), 0.5)[1]
assert kept.tolist() == [0, 2], kept
print(f"mmcv._ext loads with torch {torch.__version__} (CUDA {torch.version.cuda}); NMS on the CPU ok")
PY
wheel="$(ls "$OUT_DIR"/mmcv-*.whl)"
say "done in $((SECONDS - start)) s: $wheel ($(du -h "$wheel" | cut -f1))"
