#!/usr/bin/env bash
# Make a bare GPU machine ready for bench/gpu.py (issue 15), offline: Python 3.12 with torch + CUDA
# there (and nvcc, unless .whl/ holds an mmcv wheel prebuilt for the card), nothing of ours, no
# network. Needs .whl/ from scripts/gpu_wheels.sh (run where the package registry is reachable)
# next to this checkout. Then:
#
#     bash scripts/gpu_setup.sh && PYTHONPATH=/tmp/site python3 bench/gpu.py
#
# Steps (each timed; the summary line says how long each took):
#   1. check   python 3.12, torch, its CUDA and the card (nvcc: only in step 3, when it compiles)
#   2. wheels  install .whl/*.whl into $SITE (default /tmp/site; PYTHONPATH puts it first), no deps,
#              and unpack .whl/*.whl.tar.xz there (wheels too big to carry as they are)
#   3. mmcv    compile mmcv 2.1.0's ops from the sdist for THIS card only (TORCH_CUDA_ARCH_LIST from
#              the card's compute capability), all cores, no debug info; installed into $SITE
#   4. smoke   import mmcv's ops, mmdet, mmengine, supervisely and the app; NMS and RoIAlign on the GPU
# Without a CUDA GPU (a CPU rehearsal) step 3 builds the CPU ops and step 4 runs them on the CPU;
# with PRETEND_ARCH=9.0 and a CUDA build of torch, step 3 takes the prebuilt wheel for that card
# (the path a GPU machine takes; its CUDA kernels cannot run here) and step 4 runs its ops on the CPU.
set -euo pipefail
cd "$(dirname "$0")/.."
WHL="${WHL_DIR:-.whl}"
SITE="${SITE:-/tmp/site}"
PY="${PY:-python3}"
MMCV_VERSION="2.1.0"
export PYTHONPATH="$SITE${PYTHONPATH:+:$PYTHONPATH}"
times=()
t0=$SECONDS
step() { printf '\n==> [gpu-setup %s] %s\n' "$(date +%H:%M:%S)" "$1"; }
took() { times+=("$1 $((SECONDS - t0)) s"); t0=$SECONDS; }

step "check the machine"
[[ -f "$WHL/mmcv-$MMCV_VERSION.tar.gz" ]] || { echo "no $WHL/mmcv-$MMCV_VERSION.tar.gz: run scripts/gpu_wheels.sh where the registry is reachable and carry $WHL here" >&2; exit 1; }
"$PY" -c 'import sys; assert sys.version_info[:2] == (3, 12), f"the wheels are for Python 3.12, not {sys.version}"'
read -r CUDA ARCH NAME < <("$PY" -W ignore -c '
import torch
import os
if torch.cuda.is_available():
    major, minor = torch.cuda.get_device_capability(0)
    print(torch.version.cuda, f"{major}.{minor}", torch.cuda.get_device_name(0).replace(" ", "_"))
elif os.environ.get("PRETEND_ARCH") and torch.version.cuda:  # a CPU rehearsal of the prebuilt path
    print(torch.version.cuda, os.environ["PRETEND_ARCH"], "none_(rehearsal)")
else:
    print("none none CPU")')
echo "python $("$PY" -V 2>&1 | cut -d" " -f2), torch $("$PY" -W ignore -c 'import torch; print(torch.__version__)'), CUDA $CUDA, card $NAME (sm $ARCH), $(nproc) cores"
took check

step "install the carried wheels into $SITE"
mkdir -p "$SITE"
"$PY" -m pip install -q --disable-pip-version-check --no-index --no-deps --no-compile --no-cache-dir \
    --upgrade --target "$SITE" "$WHL"/*.whl
for packed in "$WHL"/*.whl.tar.xz; do  # too big to carry as a wheel: its files, unpacked (gpu_wheels.sh)
    [[ -e "$packed" ]] && tar xJf "$packed" -C "$SITE"
done
took wheels

step "mmcv $MMCV_VERSION's ops (${ARCH} only)"
# A wheel compiled for exactly this torch, CUDA and card (a name of letters, digits, '.', '_' and
# '-' only: what the device tool brings back from $OUT) is installed as it is: carried in
# $WHL/mmcv-cuda/<KEY>/ (scripts/gpu_wheels.sh copies it there from .cache/gpu-mmcv/ when one
# was brought back), or left by a first run on this machine. Else it is compiled, and with
# WHEEL_OUT set, copied to $WHEEL_OUT/mmcv-cuda/<KEY>/ to be carried next time.
TORCH_TAG="$("$PY" -W ignore -c 'import torch; print(torch.__version__.replace("+", "-"))')"
KEY="torch$TORCH_TAG-cuda$CUDA-sm${ARCH//./}"
BUILD="${SITE%/}.mmcv-$ARCH"
mkdir -p "$BUILD"
if compgen -G "$WHL/mmcv-cuda/$KEY/mmcv-$MMCV_VERSION-*.whl" >/dev/null; then
    cp "$WHL/mmcv-cuda/$KEY"/mmcv-"$MMCV_VERSION"-*.whl "$BUILD/"
    echo "prebuilt wheel for $KEY: $(ls "$BUILD"/mmcv-*.whl)"
elif compgen -G "$BUILD/mmcv-*.whl" >/dev/null; then
    echo "reusing $(ls "$BUILD"/mmcv-*.whl)"
else
    [[ -z "${PRETEND_ARCH:-}" ]] || { echo "rehearsal: no prebuilt wheel for $KEY in $WHL/mmcv-cuda/" >&2; exit 1; }
    # nvcc only here: a prebuilt (or already built) wheel needs no compiler
    if [[ "$CUDA" != none ]]; then
        command -v nvcc >/dev/null || [[ -x "${CUDA_HOME:-/usr/local/cuda}/bin/nvcc" ]] \
            || { echo "no prebuilt wheel for $KEY in $WHL/mmcv-cuda/, and torch has CUDA but nvcc is not on PATH (or CUDA_HOME): mmcv's CUDA ops cannot be built" >&2; exit 1; }
    fi
    echo "no prebuilt wheel for $KEY in $WHL/mmcv-cuda/: compiling ($(nproc) jobs)"
    # Python's own CFLAGS without -g (debug info is most of a compile; see scripts/setup.sh)
    CFLAGS_="$("$PY" -c 'import sysconfig; print(sysconfig.get_config_var("CFLAGS"))' | sed -e 's/ -g / /g') -g0"
    FORCE_CUDA=0
    [[ "$CUDA" != none ]] && FORCE_CUDA=1
    TORCH_CUDA_ARCH_LIST="$ARCH" FORCE_CUDA="$FORCE_CUDA" MMCV_WITH_OPS=1 MAX_JOBS="$(nproc)" \
        CFLAGS="$CFLAGS_" CXXFLAGS="$CFLAGS_" \
        "$PY" -m pip wheel -v --disable-pip-version-check --no-index --no-deps --no-build-isolation \
        --no-cache-dir -w "$BUILD" "$WHL/mmcv-$MMCV_VERSION.tar.gz" > "$BUILD/build.log" 2>&1 \
        || { tail -n 40 "$BUILD/build.log" >&2; echo "mmcv build failed; log: $BUILD/build.log" >&2; exit 1; }
    if [[ -n "${WHEEL_OUT:-}" ]]; then
        mkdir -p "$WHEEL_OUT/mmcv-cuda/$KEY"
        cp "$BUILD"/mmcv-*.whl "$WHEEL_OUT/mmcv-cuda/$KEY/"
        echo "compiled wheel copied to $WHEEL_OUT/mmcv-cuda/$KEY/ (carry it in .cache/gpu-mmcv/$KEY/)"
    fi
fi
"$PY" -m pip install -q --disable-pip-version-check --no-index --no-deps --no-cache-dir --upgrade \
    --target "$SITE" "$BUILD"/mmcv-*.whl
took mmcv

step "smoke test"
"$PY" -W ignore - <<'PY'
import torch
import mmcv, mmcv.ops, mmdet, mmengine, supervisely  # noqa: E401
from mmcv.ops import RoIAlign, nms
import src.training.session, src.training.distributed, src.evaluation.evaluate  # noqa: E401,F401  the app's modules

device = "cuda" if torch.cuda.is_available() else "cpu"
boxes = torch.tensor([[0, 0, 10, 10], [1, 1, 11, 11], [50, 50, 60, 60]], dtype=torch.float, device=device)
kept = nms(boxes, torch.tensor([0.9, 0.8, 0.7], device=device), 0.5)[1]
assert kept.tolist() == [0, 2], kept
rois = torch.tensor([[0, 0, 0, 8, 8]], dtype=torch.float, device=device)
pooled = RoIAlign((2, 2), 1.0, 0)(torch.ones(1, 1, 16, 16, device=device), rois)
assert pooled.shape == (1, 1, 2, 2) and torch.allclose(pooled, torch.ones_like(pooled))
print(f"mmcv {mmcv.__version__} ops on {device}, mmdet {mmdet.__version__}, mmengine "
      f"{mmengine.__version__}, supervisely {supervisely.__version__}, torch {torch.__version__}")
PY
took smoke
echo "gpu-setup done: ${times[*]}"
