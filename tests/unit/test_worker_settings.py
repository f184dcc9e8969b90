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
    assert usable_cpus(cpu_max) == 1
    cpu_max.write_text(f"{100000 * (affinity + 4)} 100000\n")  # more than there are
    assert usable_cpus(cpu_max) == affinity
    cpu_max.write_text("max 100000\n")
    assert usable_cpus(cpu_max) == affinity
    assert usable_cpus(tmp_path / "missing") == affinity
