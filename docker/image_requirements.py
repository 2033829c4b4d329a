"""Print the image's pins: requirements.txt with docker/requirements-overrides.txt applied.

Usage: python docker/image_requirements.py > /tmp/requirements-image.txt
"""

from __future__ import annotations

import re
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent


def _name(line: str) -> str | None:
    line = line.split("#", 1)[0].strip()
    match = re.match(r"([A-Za-z0-9_.\-]+)\s*==", line)
    return match.group(1).lower().replace("_", "-") if match else None


def image_requirements(root: Path = ROOT) -> list[str]:
    base = (root / "requirements.txt").read_text().splitlines()
    overrides = (root / "docker" / "requirements-overrides.txt").read_text().splitlines()
    replaced = {_name(line) for line in overrides} - {None}
    kept = [line.split("#", 1)[0].strip() for line in base if _name(line) not in replaced]
    added = [line.split("#", 1)[0].strip() for line in overrides if _name(line)]
    return [line for line in kept + added if line]


if __name__ == "__main__":
    sys.stdout.write("\n".join(image_requirements()) + "\n")
