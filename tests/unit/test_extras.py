"""studentperf.extras against pyproject.toml: the guard of each role checks exactly the libraries
its extra installs, and a missing one is named with the command that installs it."""

from __future__ import annotations

import re
import tomllib
from importlib.metadata import packages_distributions
from pathlib import Path

import pytest

from studentperf import extras

ROOT = Path(__file__).resolve().parents[2]


def normalised(name: str) -> str:
    return re.sub(r"[-_.]+", "-", name).lower()


def extra_distributions(extra: str) -> set[str]:
    """The distribution names an extra of pyproject.toml lists (versions and markers dropped)."""
    optional = tomllib.loads((ROOT / "pyproject.toml").read_text())["project"]
    listed = optional["optional-dependencies"][extra]
    return {normalised(re.split(r"[\s\[<>=!~;]", item, maxsplit=1)[0]) for item in listed}


def distribution_of(module: str) -> str:
    found = packages_distributions().get(module)
    assert found, f"{module} is not installed here: is it in the dev extra?"
    return normalised(found[0])


@pytest.mark.parametrize("extra", sorted(extras.MODULES_OF_EXTRA))
def test_each_guard_checks_exactly_the_libraries_of_its_extra(extra: str) -> None:
    checked = {distribution_of(module) for module in extras.MODULES_OF_EXTRA[extra]}
    assert checked == extra_distributions(extra)


def test_the_roles_of_the_dev_extra_are_every_guarded_extra() -> None:
    roles = [
        item
        for item in tomllib.loads((ROOT / "pyproject.toml").read_text())["project"][
            "optional-dependencies"
        ]["dev"]
        if item.startswith("studentperf[")
    ]
    assert roles == [f"studentperf[{','.join(extras.MODULES_OF_EXTRA)}]"]


def test_a_missing_library_names_the_extra_to_install(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setitem(extras.MODULES_OF_EXTRA, "recorder", ("asyncpg", "no_such_module_xyz"))
    with pytest.raises(extras.MissingExtraError) as raised:
        extras.require("recorder", "recorder_service")
    print(f"\n{raised.value}")
    assert "missing: no_such_module_xyz" in str(raised.value)
    assert "pip install 'studentperf[recorder]'" in str(raised.value)
    extras.require("server", "inference_service")  # installed here: no error


def test_a_missing_module_names_every_extra_that_brings_it(monkeypatch: pytest.MonkeyPatch) -> None:
    """studentperf-migrate needs only asyncpg: the error names every extra that brings it, and
    the one that brings the fewest libraries to install."""
    for extra in ("server", "trainer"):
        monkeypatch.setitem(extras.MODULES_OF_EXTRA, extra, ("asyncpg", "no_such_module_xyz"))
    monkeypatch.setitem(extras.MODULES_OF_EXTRA, "recorder", ("no_such_module_xyz",))
    with pytest.raises(extras.MissingExtraError) as raised:
        extras.require_module("no_such_module_xyz", "studentperf.migrate")
    print(f"\n{raised.value}")
    assert str(raised.value) == (
        "studentperf.migrate needs no_such_module_xyz, which is not installed: pip install "
        "'studentperf[recorder]' (any of the extras server, recorder, trainer brings it)"
    )
    extras.require_module("asyncpg", "studentperf.migrate")  # installed here: no error
