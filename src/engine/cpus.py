"""The CPUs this process may really use, for sizing the data loaders.

``os.cpu_count()`` counts the machine's cores: a container limited to 4 of a 64-core host (a
cgroup CPU quota, what ``docker --cpus`` and Kubernetes' CPU limits set), or a process pinned to
some cores (``taskset``, a scheduler's cpuset), still reads 64, and 64 / GPUs data-loader
workers then fight over 4 cores, each holding its own copy of the dataset. The usable count is
the smallest of the affinity mask and the cgroup quotas on the way from this process's cgroup to
the root (v2 ``cpu.max``; v1 ``cpu.cfs_quota_us`` / ``cpu.cfs_period_us``), rounded up (a quota
of 1.5 CPUs runs two threads at 75 %).
"""

from __future__ import annotations

import math
import os
from pathlib import Path

CGROUP_ROOT = Path("/sys/fs/cgroup")
PROC_CGROUP = Path("/proc/self/cgroup")


def usable_cpus(cgroup_root: Path = CGROUP_ROOT, proc_cgroup: Path = PROC_CGROUP) -> int:
    """CPUs this process may use: its affinity mask, capped by its cgroup's CPU quota."""
    try:
        count = len(os.sched_getaffinity(0))
    except (AttributeError, OSError):  # not Linux
        count = os.cpu_count() or 1
    quota = cgroup_cpu_quota(cgroup_root, proc_cgroup)
    if quota is not None:
        count = min(count, math.ceil(quota))
    return max(1, count)


def nproc_problem(nproc: int, cpus: int | None = None) -> str | None:
    """Why ``nproc`` CPU training processes cannot run here (None: they can): each is a whole
    training (its own torch, model and data) that needs a core; 31 of them on 2 cores take
    minutes only to start, and as long to stop."""
    cpus = usable_cpus() if cpus is None else cpus
    if nproc <= cpus:
        return None
    return (
        f"nproc {nproc} asks for {nproc} CPU training processes, and this machine gives the app "
        f"{cpus} CPU(s): use nproc {cpus} or fewer (one process per core)"
    )


def cgroup_cpu_quota(
    cgroup_root: Path = CGROUP_ROOT, proc_cgroup: Path = PROC_CGROUP
) -> float | None:
    """The tightest CPU quota (in CPUs) over this process's cgroup and its ancestors; None where
    there is none (or no cgroup file system: not Linux, or not mounted)."""
    try:
        lines = proc_cgroup.read_text(encoding="utf-8").splitlines()
    except OSError:
        return None
    quotas = []
    for line in lines:
        _, controllers, path = line.split(":", 2)
        if controllers == "":  # v2: one hierarchy, cpu.max
            quotas += [_v2_quota(d) for d in _ancestors(cgroup_root, path)]
        elif "cpu" in controllers.split(","):  # v1: the cpu controller's own mount
            mount = cgroup_root / controllers
            if not mount.is_dir():
                mount = cgroup_root / "cpu"
            quotas += [_v1_quota(d) for d in _ancestors(mount, path)]
    found = [q for q in quotas if q is not None]
    return min(found) if found else None


def _ancestors(mount: Path, path: str) -> list[Path]:
    """The cgroup's folder under ``mount`` and those above it, the ones that exist (inside a
    container its path names the host's hierarchy, which is not mounted: the root is)."""
    parts = [p for p in path.strip("/").split("/") if p and p != ".."]
    folders = [mount.joinpath(*parts[:n]) for n in range(len(parts), -1, -1)]
    return [f for f in folders if f.is_dir()]


def _v2_quota(folder: Path) -> float | None:
    """``cpu.max``: "max 100000" (none) or "<quota> <period>" in microseconds."""
    try:
        quota, period = (folder / "cpu.max").read_text(encoding="utf-8").split()[:2]
        return None if quota == "max" else int(quota) / int(period)
    except (OSError, ValueError, ZeroDivisionError):
        return None


def _v1_quota(folder: Path) -> float | None:
    """``cpu.cfs_quota_us`` (-1: none) over ``cpu.cfs_period_us``."""
    try:
        quota = int((folder / "cpu.cfs_quota_us").read_text(encoding="utf-8"))
        period = int((folder / "cpu.cfs_period_us").read_text(encoding="utf-8"))
        return quota / period if quota > 0 and period > 0 else None
    except (OSError, ValueError):
        return None
