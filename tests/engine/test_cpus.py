"""The CPUs a process may use (issue 34, item 9): ``os.cpu_count()`` counts the host's cores;
a pinned process (affinity) or a container with a CPU quota (cgroup v1 or v2) has fewer. Stand-ins:
the affinity mask patched, and a cgroup file system written under ``tmp_path``."""

from __future__ import annotations

import os
from pathlib import Path

import pytest

from src.engine.cpus import cgroup_cpu_quota, usable_cpus


def _write(path: Path, text: str) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(text, encoding="utf-8")


@pytest.fixture
def host_of_64(monkeypatch):
    """A 64-core host: what ``os.cpu_count()`` says whatever the process may use."""
    monkeypatch.setattr(os, "cpu_count", lambda: 64)
    monkeypatch.setattr(os, "sched_getaffinity", lambda pid: set(range(64)))


def test_the_affinity_mask_bounds_the_count(host_of_64, monkeypatch, tmp_path):
    monkeypatch.setattr(os, "sched_getaffinity", lambda pid: {3, 4, 5, 6})
    assert usable_cpus(tmp_path / "none", tmp_path / "no-proc-cgroup") == 4


def test_a_cgroup_v2_quota_on_an_ancestor_bounds_the_count(host_of_64, tmp_path):
    """The tightest quota on the way up counts, rounded up; "max" is none."""
    root, proc = tmp_path / "cgroup", tmp_path / "proc-self-cgroup"
    _write(proc, "0::/kubepods/pod1/box\n")
    _write(root / "cpu.max", "max 100000\n")
    _write(root / "kubepods" / "pod1" / "cpu.max", "250000 100000\n")  # 2.5 CPUs
    _write(root / "kubepods" / "pod1" / "box" / "cpu.max", "max 100000\n")
    assert cgroup_cpu_quota(root, proc) == 2.5
    assert usable_cpus(root, proc) == 3


def test_a_cgroup_v1_quota_inside_a_container_is_read_at_the_mount(host_of_64, tmp_path):
    """Inside a container /proc/self/cgroup names the host's path, which is not mounted: the
    controller's mount root holds the container's quota (docker --cpus=6)."""
    root, proc = tmp_path / "cgroup", tmp_path / "proc-self-cgroup"
    _write(proc, "4:memory:/docker/abc\n3:cpu,cpuacct:/docker/abc\n1:name=systemd:/docker/abc\n")
    _write(root / "cpu,cpuacct" / "cpu.cfs_quota_us", "600000\n")
    _write(root / "cpu,cpuacct" / "cpu.cfs_period_us", "100000\n")
    assert usable_cpus(root, proc) == 6


def test_no_quota_and_no_cgroup_leave_the_affinity(host_of_64, tmp_path):
    root, proc = tmp_path / "cgroup", tmp_path / "proc-self-cgroup"
    _write(proc, "1:cpu:/\n0::/\n")
    _write(root / "cpu" / "cpu.cfs_quota_us", "-1\n")
    _write(root / "cpu" / "cpu.cfs_period_us", "100000\n")
    assert cgroup_cpu_quota(root, proc) is None
    assert usable_cpus(root, proc) == 64
    assert usable_cpus(tmp_path / "absent", tmp_path / "absent-too") == 64


def test_this_machine_answers_within_its_cores():
    assert 1 <= usable_cpus() <= (os.cpu_count() or 1)
