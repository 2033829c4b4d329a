#!/usr/bin/env bash
# Idempotent environment setup for Train MMDetection 3 (called by `make setup`).
#
# Needs only Python 3.11 and a C++ compiler. Steps:
#   1. create .venv
#   2. install torch (TORCH_SPEC, default torch==2.13.0; any torch >= 2.1 works)
#   3. install mmcv 2.1.0 WITH compiled ops: from a cached wheel when one fits this
#      python/torch/flags, else built once from the PyPI sdist (2-6 min on 2 cores: no debug info,
#      torch's headers precompiled once) and cached in
#      .cache/wheels (repo-local, git-ignored) and ~/.cache/train-mmdet3/wheels (survives a fresh clone)
#   4. install requirements.txt + requirements-dev.txt with exact pins, then `pip check`
#   5. smoke-import everything, mmcv's compiled ops included
# A stamp file records what was installed, so a second run takes seconds.
set -euo pipefail

ROOT="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
cd "$ROOT"

PYTHON="${PYTHON:-python3.11}"
# VENV_DIR and REQUIREMENTS let `make test-image-torch` build a second venv with the production
# image's torch and pins (docker/requirements-overrides.txt) beside the main one.
VENV="${VENV_DIR:-$ROOT/.venv}"
REQUIREMENTS="${REQUIREMENTS:-requirements.txt}"
VPY="$VENV/bin/python"
TORCH_SPEC="${TORCH_SPEC:-torch==2.13.0}"
MMCV_VERSION="2.1.0"
LOCAL_CACHE="$ROOT/.cache/wheels"
USER_CACHE="${XDG_CACHE_HOME:-$HOME/.cache}/train-mmdet3/wheels"
STAMP="$VENV/.setup-stamp"
PIP=("$VPY" -m pip --disable-pip-version-check)
# Some machines list extra package indexes that do not exist; pip warns once per package.
quiet_pip() {
    "${PIP[@]}" "$@" 2> >(grep -v "is ignored: it is neither a file nor a directory" >&2)
}

CURRENT_STEP="start"
step() {
    CURRENT_STEP="$1"
    printf '\n==> [setup %s] %s\n' "$(date +%H:%M:%S)" "$1"
}
on_error() {
    printf '\nsetup FAILED during step: %s\n' "$CURRENT_STEP" >&2
    printf 'Fix the problem above and run `make setup` again (finished steps are skipped).\n' >&2
}
trap on_error ERR

# The stamp holds a hash of every input that decides what gets installed.
inputs_hash() {
    cat "$REQUIREMENTS" requirements-dev.txt scripts/setup.sh | sha256sum | cut -c1-16
    echo "$TORCH_SPEC"
}
WANT_STAMP="$(inputs_hash | tr '\n' ' ')"
if [[ -x "$VPY" && -f "$STAMP" && "$(cat "$STAMP")" == "$WANT_STAMP" ]]; then
    echo "==> [setup] $VENV is up to date (delete $STAMP to force a reinstall)"
    exit 0
fi

step "check python"
command -v "$PYTHON" >/dev/null || { echo "$PYTHON not found; install Python 3.11 or set PYTHON=..." >&2; false; }
"$PYTHON" -c 'import sys; assert sys.version_info[:2] == (3, 11), sys.version' \
    || { echo "$PYTHON is not Python 3.11" >&2; false; }

step "create virtual environment .venv"
[[ -x "$VPY" ]] || "$PYTHON" -m venv "$VENV"
quiet_pip install -q --upgrade pip 'wheel' >/dev/null

step "install torch ($TORCH_SPEC)"
quiet_pip install -q "$TORCH_SPEC"
TORCH_VERSION="$("$VPY" -W ignore -c 'import torch; print(torch.__version__.split("+")[0])' 2>/dev/null)"
echo "torch $TORCH_VERSION"

# Compiler flags for mmcv's ops. setuptools >= 72 REPLACES Python's CFLAGS with $CFLAGS (it does
# not append), so start from Python's own (-DNDEBUG -g -fwrapv -O3 -Wall) and drop only -g: debug
# info nobody reads, which costs a large share of the compile; code generation is unchanged
# (bench/mmcv_build.py measures build time and NMS/RoIAlign speed per flag set, side by side).
# MMCV_CFLAGS overrides the whole set.
PY_CFLAGS="$("$VPY" -c 'import sysconfig; print(sysconfig.get_config_var("CFLAGS"))')"
MMCV_CFLAGS="${MMCV_CFLAGS:-$(echo " $PY_CFLAGS " | sed -e 's/ -g / /g' -e 's/^ *//' -e 's/ *$//') -g0}"
FLAGS_TAG="$(echo "$MMCV_CFLAGS" | sha256sum | cut -c1-8)"

# A compiled mmcv wheel is tied to the python and torch it was built against, and to the flags:
# the cache key says so.
PYTAG="$("$VPY" -c 'import sys; print(f"cp{sys.version_info[0]}{sys.version_info[1]}")')"
KEY="mmcv-$MMCV_VERSION-$PYTAG-torch$TORCH_VERSION-$(uname -m)-$FLAGS_TAG"
mkdir -p "$LOCAL_CACHE" "$USER_CACHE"

# A precompiled header of torch's C++ API, built with exactly the flags and macros mmcv's setup.py
# compiles its ops with (gcc uses a .gch only when they match; -Winvalid-pch says when it does not,
# and the build then parses the header as usual). Force-included into every op source; the
# headers' include guards make their own #include of it a no-op. Prints the header's path.
precompile_torch_header() {
    local dir="$1/pch" cxx torch_inc py_inc
    mkdir -p "$dir"
    printf '#include <torch/types.h>\n#include <ATen/ATen.h>\n' > "$dir/mmcv_torch.h"
    cxx="$("$VPY" -c 'import sysconfig; print(sysconfig.get_config_var("CXX").split()[0])')"
    torch_inc="$("$VPY" -W ignore -c 'from torch.utils.cpp_extension import include_paths as p; print(" ".join("-I" + i for i in p()))')"
    py_inc="-I$("$VPY" -c 'import sysconfig; print(sysconfig.get_paths()["include"])')"
    # shellcheck disable=SC2086  # word splitting of the flag lists is intended
    "$cxx" $MMCV_CFLAGS -std=c++17 -fPIC -DTORCH_API_INCLUDE_EXTENSION_H -DTORCH_EXTENSION_NAME=_ext \
        $torch_inc $py_inc -x c++-header "$dir/mmcv_torch.h" -o "$dir/mmcv_torch.h.gch" \
        2>"$dir/pch.log" || { echo "(no precompiled header: $(tail -n 1 "$dir/pch.log"))" >&2; return 1; }
    echo "$dir/mmcv_torch.h"
}

find_cached_wheel() {
    local dir
    for dir in "$LOCAL_CACHE/$KEY" "$USER_CACHE/$KEY"; do
        compgen -G "$dir/mmcv-$MMCV_VERSION-*.whl" >/dev/null && { ls "$dir"/mmcv-"$MMCV_VERSION"-*.whl | head -n1; return 0; }
    done
    return 1
}

step "install mmcv $MMCV_VERSION with compiled ops"
if [[ "$(cat "$VENV/.mmcv-key" 2>/dev/null)" == "$KEY" ]] \
    && "$VPY" -c "import mmcv, mmcv.ops, sys; sys.exit(mmcv.__version__ != '$MMCV_VERSION')" 2>/dev/null; then
    echo "mmcv $MMCV_VERSION with ops already installed ($KEY)"
else
    if ! WHEEL="$(find_cached_wheel)"; then
        # measured: 2 min 16 s on a 2-core machine; 2.3x that on the slowest 2-core machine seen
        echo "no cached wheel for $KEY: building mmcv from the PyPI sdist, once" \
            "(2 to 6 minutes on 2 cores; log: .cache/mmcv-build.log)"
        # mmcv's setup.py imports pkg_resources (gone in setuptools >= 81) and must see our torch,
        # hence setuptools<81 in this venv for the build and --no-build-isolation.
        quiet_pip install -q 'setuptools>=77.0.3,<81' ninja
        # --no-cache-dir: pip would otherwise reuse a wheel it built earlier with other flags
        BUILD_DIR="$(mktemp -d)"
        BUILD_START=$SECONDS
        BUILD_CFLAGS="$MMCV_CFLAGS"
        if [[ "${MMCV_PCH:-1}" == 1 ]] && PCH="$(precompile_torch_header "$BUILD_DIR")"; then
            # every op source starts by parsing torch's headers (~5 s each): parse them once
            BUILD_CFLAGS="$MMCV_CFLAGS -include $PCH -Winvalid-pch"
        fi
        MMCV_WITH_OPS=1 FORCE_CUDA=0 MAX_JOBS="${MAX_JOBS:-$(nproc)}" \
            CFLAGS="$BUILD_CFLAGS" CXXFLAGS="$BUILD_CFLAGS" \
            "${PIP[@]}" wheel -v --no-deps --no-build-isolation --no-cache-dir --progress-bar off \
            -w "$BUILD_DIR" "mmcv==$MMCV_VERSION" > "$ROOT/.cache/mmcv-build.log" 2>&1 &
        BUILD_PID=$!
        while kill -0 "$BUILD_PID" 2>/dev/null; do
            sleep 60
            kill -0 "$BUILD_PID" 2>/dev/null && echo "  ... still compiling mmcv ops ($(date +%H:%M:%S))"
        done
        wait "$BUILD_PID" || { tail -n 30 "$ROOT/.cache/mmcv-build.log" >&2; echo "mmcv build failed; full log: .cache/mmcv-build.log" >&2; false; }
        echo "mmcv compiled in $(( (SECONDS - BUILD_START) / 60 )) min $(( (SECONDS - BUILD_START) % 60 )) s"
        if grep -q "not used because" "$ROOT/.cache/mmcv-build.log"; then  # -Winvalid-pch says
            echo "(the precompiled torch header was not used for some files: see .cache/mmcv-build.log)"
        fi
        mkdir -p "$LOCAL_CACHE/$KEY" "$USER_CACHE/$KEY"
        cp "$BUILD_DIR"/mmcv-*.whl "$LOCAL_CACHE/$KEY/"
        cp "$BUILD_DIR"/mmcv-*.whl "$USER_CACHE/$KEY/" || echo "(could not write the user cache $USER_CACHE)"
        rm -rf "$BUILD_DIR"
        WHEEL="$(find_cached_wheel)"
    else
        echo "using cached wheel $WHEEL"
        # keep both caches filled, so a fresh clone or a wiped ~/.cache still finds it
        mkdir -p "$LOCAL_CACHE/$KEY" "$USER_CACHE/$KEY"
        cp -n "$WHEEL" "$LOCAL_CACHE/$KEY/" 2>/dev/null || true
        cp -n "$WHEEL" "$USER_CACHE/$KEY/" 2>/dev/null || true
    fi
    quiet_pip install -q --no-deps --force-reinstall "$WHEEL"
    echo "$KEY" > "$VENV/.mmcv-key"
fi

step "install pinned requirements (mmengine, mmdet, supervisely, ...)"
quiet_pip install -q -r "$REQUIREMENTS" -r requirements-dev.txt
"${PIP[@]}" check

step "smoke test the environment"
"$VPY" - <<'PY'
import warnings
warnings.filterwarnings("ignore")
import torch, mmcv, mmcv.ops, mmengine, mmdet, supervisely, pycocotools  # noqa: F401
from mmcv.ops import nms
boxes = torch.tensor([[0.0, 0.0, 10.0, 10.0], [1.0, 1.0, 10.0, 10.0]])
nms(boxes, torch.tensor([0.9, 0.8]), 0.5)  # compiled op on CPU
print(f"torch {torch.__version__}, mmcv {mmcv.__version__} (ops ok), mmengine {mmengine.__version__}, "
      f"mmdet {mmdet.__version__}, supervisely {supervisely.__version__}")
PY

echo "$WANT_STAMP" > "$STAMP"
step "done"
