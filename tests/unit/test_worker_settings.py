"""STUDENTPERF_WORKERS: a count, or "auto" for the CPUs this process may use."""

from __future__ import annotations

import os
from pathlib import Path

import pytest

from inference_service.settings import MAX_WORKERS, Settings, usable_cpus
from studentperf.config import ConfigError


def test_one_process_by_default_and_a_count_when_set() -> None:
    assert Settings.from_env({}).workers == 1
    assert Settings.from_env({"STUDENTPERF_WORKERS": "3"}).workers == 3


def test_auto_is_the_usable_cpus() -> None:
    expected = min(usable_cpus(), MAX_WORKERS)
    assert Settings.from_env({"STUDENTPERF_WORKERS": "auto"}).workers == expected


@pytest.mark.parametrize("value", ["0", "-1", "two", str(MAX_WORKERS + 1)])
def test_a_bad_count_names_the_variable(value: str) -> None:
    with pytest.raises(ConfigError, match="STUDENTPERF_WORKERS"):
        Settings.from_env({"STUDENTPERF_WORKERS": value})


def test_usable_cpus_is_cut_to_the_cgroup_quota(tmp_path: Path) -> None:
    affinity = len(os.sched_getaffinity(0))
    cpu_max = tmp_path / "cpu.max"
    cpu_max.write_text("50000 100000\n")  # half a CPU: rounded up
    assert usable_cpus(tmp_path) == 1
    cpu_max.write_text(f"{100000 * (affinity + 4)} 100000\n")  # more than there are
    assert usable_cpus(tmp_path) == affinity
    cpu_max.write_text("max 100000\n")
    assert usable_cpus(tmp_path) == affinity
    assert usable_cpus(tmp_path / "missing") == affinity


@pytest.mark.parametrize("controller", ["cpu", "cpu,cpuacct"])
def test_usable_cpus_is_cut_to_a_cgroup_v1_quota(tmp_path: Path, controller: str) -> None:
    """A cgroup v1 host (found by review, helper-52): `docker run --cpus=1` sets these."""
    affinity = len(os.sched_getaffinity(0))
    folder = tmp_path / controller
    folder.mkdir()
    (folder / "cpu.cfs_period_us").write_text("100000\n")
    (folder / "cpu.cfs_quota_us").write_text("100000\n")
    assert usable_cpus(tmp_path) == 1
    (folder / "cpu.cfs_quota_us").write_text("-1\n")  # no limit
    assert usable_cpus(tmp_path) == affinity
