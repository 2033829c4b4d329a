"""Download mmcv's sdist from PyPI's simple page into DEST, checked against its sha256.

    python scripts/mmcv_sdist.py DEST_FILE VERSION

``pip download`` would build the sdist's metadata, which imports torch: a plain download is what
scripts/gpu_wheels.sh (carried to the GPU machine) and scripts/gpu_mmcv_wheel.sh (compiled here)
need. Standard library only.
"""

import hashlib
import re
import sys
import urllib.request

path, version = sys.argv[1], sys.argv[2]
name = f"mmcv-{version}.tar.gz"
page = urllib.request.urlopen("https://pypi.org/simple/mmcv/", timeout=60).read().decode()
link = next(h for h in re.findall(r'href="([^"]+)"', page) if f"/{name}#" in h)
url, _, sha256 = link.replace("&amp;", "&").partition("#sha256=")
data = urllib.request.urlopen(url, timeout=300).read()
assert hashlib.sha256(data).hexdigest() == sha256, f"{name}: sha256 mismatch"
with open(path, "wb") as out:
    out.write(data)
