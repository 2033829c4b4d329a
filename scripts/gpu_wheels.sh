#!/usr/bin/env bash
# Wheels for running bench/gpu.py on a bare GPU machine (issue 15): one with Python 3.12, torch with
# CUDA and nvcc, none of our packages and no network. Run HERE, where the package registry is
# reachable (`make gpu-wheels`); then carry .whl/ there (git-ignored) and run scripts/gpu_setup.sh.
#
# .whl/ gets, for CPython 3.12 on manylinux x86_64:
#   - every pin of requirements.txt that the machine's image does not hold
#     (scripts/gpu_image_packages.txt), as a wheel: downloaded, or built here from the sdist
#     (pure-Python ones; a compiled one is downloaded for cp312 or the script fails)
#   - setuptools<81 (mmcv's setup.py imports pkg_resources, gone from setuptools 81)
#   - mmcv 2.1.0's sdist: its ops are compiled there, for that card only (scripts/gpu_setup.sh),
#     unless mmcv-cuda/<KEY>/ holds a wheel for that machine (built here: scripts/gpu_mmcv_wheel.sh)
# Left out on purpose: opencv-python (the image's opencv-python-headless gives the same cv2) and
# debugpy (nothing the benchmark runs imports it). SimpleITK, which `import supervisely` needs, is a
# 50 MiB wheel: with it .whl/ would pass the 64 MiB a device call carries, so it travels unpacked
# and xz-compressed (28 MiB; what pip's --target install would write), and gpu_setup.sh unpacks it.
set -euo pipefail
cd "$(dirname "$0")/.."
OUT="${OUT_DIR:-.whl}"
PY="${PY:-.venv/bin/python}"
SKIP="opencv-python debugpy"
PACKED="simpleitk"  # carried as <wheel>.tar.xz of its unpacked files
SETUPTOOLS="setuptools==80.9.0"
MMCV_VERSION="2.1.0"
start=$SECONDS
rm -rf "$OUT" && mkdir -p "$OUT"

norm() { tr 'A-Z_.' 'a-z--' <<<"$1"; }
declare -A in_image=()
while read -r name; do [[ -z "$name" || "$name" == \#* ]] || in_image[$(norm "$name")]=1; done \
    < scripts/gpu_image_packages.txt

platforms=(--platform manylinux1_x86_64 --platform manylinux2010_x86_64 --platform manylinux2014_x86_64)
for n in $(seq 5 39); do platforms+=(--platform "manylinux_2_${n}_x86_64"); done
pip_() { "$PY" -m pip --disable-pip-version-check "$@" 2> >(grep -v "is ignored: it is neither" >&2); }

wanted=()
while read -r line; do
    req="${line%%#*}"; req="${req// /}"
    [[ -z "$req" ]] && continue
    name="$(norm "${req%%==*}")"
    [[ -n "${in_image[$name]:-}" || " $SKIP " == *" $name "* ]] && continue
    wanted+=("$req")
done < requirements.txt
wanted+=("$SETUPTOOLS")

for req in "${wanted[@]}"; do
    if ! pip_ download -q --no-deps --only-binary=:all: --python-version 3.12 --implementation cp \
        --abi cp312 --abi abi3 --abi none "${platforms[@]}" -d "$OUT" "$req" >/dev/null 2>&1; then
        # no wheel on the index: an sdist, built here; only a pure-Python one can travel
        pip_ wheel -q --no-deps -w "$OUT" "$req" >/dev/null
        built="$(ls -t "$OUT"/*.whl | head -n1)"
        [[ "$built" == *-none-any.whl ]] || { echo "$req: no cp312 wheel and not pure Python ($built)" >&2; exit 1; }
    fi
done
for name in $PACKED; do
    wheel="$(ls "$OUT"/*.whl | grep -i "/${name}-" | head -n1)"
    unpacked="$(mktemp -d)"
    "$PY" -m zipfile -e "$wheel" "$unpacked"
    tar cf - -C "$unpacked" . | xz -9 -T0 > "$wheel.tar.xz"
    rm -rf "$unpacked" "$wheel"
done

"$PY" scripts/mmcv_sdist.py "$OUT/mmcv-$MMCV_VERSION.tar.gz" "$MMCV_VERSION"

# mmcv with its CUDA ops for the image (torch 2.11.0+cu130, sm 9.0), compiled here once and kept in
# .cache/gpu-mmcv/<KEY>/ (scripts/gpu_mmcv_wheel.sh: about 25 min on 2 cores the first time;
# SKIP_GPU_MMCV=1 leaves it out), beside any compiled on a GPU machine and brought back there
# (gpu_setup.sh's WHEEL_OUT): gpu_setup.sh installs the one matching the machine instead of compiling
[[ -n "${SKIP_GPU_MMCV:-}" ]] || bash scripts/gpu_mmcv_wheel.sh
if compgen -G ".cache/gpu-mmcv/*/mmcv-$MMCV_VERSION-*.whl" >/dev/null; then
    mkdir -p "$OUT/mmcv-cuda"
    cp -r .cache/gpu-mmcv/* "$OUT/mmcv-cuda/"
fi

count="$(ls "$OUT" | wc -l)"
size="$(du -sm "$OUT" | cut -f1)"
echo "gpu-wheels: $count files, $size MiB in $OUT ($((SECONDS - start)) s); carry it to the GPU machine"
(( size < 60 )) || { echo "gpu-wheels: $size MiB is over the 60 MiB a device call may carry" >&2; exit 1; }
