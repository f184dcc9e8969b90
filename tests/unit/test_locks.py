"""requirements/*.lock against pyproject.toml, offline: every requirement of the extras a lock
serves is pinned there, with hashes, at a version its range allows; so an edit of pyproject.toml
without `make lock` fails here rather than in the image build."""

from __future__ import annotations

import re
import tomllib
from importlib import metadata
from pathlib import Path
from typing import Any

import pytest
from packaging.requirements import Requirement
from packaging.utils import canonicalize_name
from packaging.version import Version

ROOT = Path(__file__).resolve().parents[2]
# Which extras each lock is made from (requirements/lock.sh).
LOCKS = {"image.lock": ("server", "recorder", "trainer"), "dev.lock": ("dev",)}


def project() -> dict[str, Any]:
    found: dict[str, Any] = tomllib.loads((ROOT / "pyproject.toml").read_text())["project"]
    return found


def requirements(extras: tuple[str, ...]) -> list[Requirement]:
    """The project's own requirements plus those of `extras`, self-references expanded, and
    what the extras of a library add (aiokafka[zstd]: cramjam)."""
    optional: dict[str, list[str]] = project()["optional-dependencies"]
    listed = [Requirement(item) for item in project()["dependencies"]]
    pending = list(extras)
    while pending:
        for item in optional[pending.pop()]:
            requirement = Requirement(item)
            if canonicalize_name(requirement.name) == "studentperf":
                pending.extend(requirement.extras)
            else:
                listed += [requirement, *brought_by_extras(requirement)]
    return listed


def brought_by_extras(requirement: Requirement) -> list[Requirement]:
    """What `requirement`'s extras add to its library's own requirements, read from the
    installed library's metadata (the dev extra installs every library a lock holds)."""
    brought: list[Requirement] = []
    for item in (metadata.requires(requirement.name) or []) if requirement.extras else []:
        dependency = Requirement(item)
        marker = dependency.marker
        if (
            marker is not None
            and not marker.evaluate({"extra": ""})
            and any(marker.evaluate({"extra": extra}) for extra in requirement.extras)
        ):
            dependency.marker = None  # named in a failure as the lock would pin it
            brought.append(dependency)
    return brought


def pins(lock: str) -> dict[str, tuple[Version, int]]:
    """name -> (pinned version, number of hashes) of each package in `lock`."""
    text = (ROOT / "requirements" / lock).read_text()
    found: dict[str, tuple[Version, int]] = {}
    for block in re.split(r"\n(?=[A-Za-z0-9])", text):
        head = re.match(r"([A-Za-z0-9._-]+)==([^\s;\\]+)", block)
        if head:
            name = canonicalize_name(head.group(1))
            found[name] = (Version(head.group(2)), block.count("--hash=sha256:"))
    return found


@pytest.mark.parametrize("lock", sorted(LOCKS))
def test_each_requirement_is_pinned_with_hashes_within_its_range(lock: str) -> None:
    pinned = pins(lock)
    for requirement in requirements(LOCKS[lock]):
        name = canonicalize_name(requirement.name)
        assert name in pinned, f"{requirement} is not in {lock}: run make lock"
        version, hashes = pinned[name]
        assert requirement.specifier.contains(version, prereleases=True), (
            f"{lock} pins {name}=={version}, outside {requirement}: run make lock"
        )
        assert hashes >= 1, f"{name} has no hash in {lock}"


def test_the_project_itself_is_not_locked() -> None:
    # setup.sh and the Dockerfile install it from the checkout, --no-deps.
    for lock in LOCKS:
        assert "studentperf" not in pins(lock)


def test_every_grpcio_package_is_on_one_version() -> None:
    for lock in LOCKS:
        versions = {v for name, (v, _) in pins(lock).items() if name.startswith("grpcio")}
        assert len(versions) == 1, f"{lock}: grpcio* packages on {sorted(map(str, versions))}"


def test_the_image_and_dev_locks_agree_on_what_they_share() -> None:
    image, dev = pins("image.lock"), pins("dev.lock")
    assert {name: image[name][0] for name in image} == {name: dev[name][0] for name in image}
