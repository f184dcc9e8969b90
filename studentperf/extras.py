"""Which optional libraries each process role needs, and a clear error when they are missing.

`pip install studentperf` brings the client and the contract only; each process comes with an
extra (pyproject.toml, [project.optional-dependencies]). The inference service, the recorder
and the trainer call `require` first thing in their package's `__init__`, so importing one of
them without its extra says which extra to install instead of failing deep inside on a bare
`No module named 'pandas'`; `studentperf-migrate`, which needs only asyncpg, calls
`require_module`. tests/unit/test_extras.py checks these lists against pyproject.toml.
"""

from __future__ import annotations

import importlib.util
from typing import Final

# Extra -> the import names of its libraries (beyond the client's grpc and protobuf).
MODULES_OF_EXTRA: Final[dict[str, tuple[str, ...]]] = {
    "server": (
        "grpc_health",
        "grpc_reflection",
        "grpc_status",
        "aiokafka",
        "asyncpg",
        "sklearn",
        "pandas",
        "numpy",
        "joblib",
        "threadpoolctl",
        "prometheus_client",
        "uvloop",
    ),
    "recorder": ("aiokafka", "asyncpg", "prometheus_client"),
    "trainer": (
        "aiokafka",
        "asyncpg",
        "sklearn",
        "pandas",
        "numpy",
        "joblib",
        "threadpoolctl",
        "scipy",
        "matplotlib",
        "fairlearn",
        "mapie",
    ),
}


class MissingExtraError(ImportError):
    """A process's libraries are not installed; the message names the extra that brings them."""


def missing(extra: str) -> list[str]:
    """The libraries of `extra` that cannot be imported here (found, not imported: cheap)."""
    return [name for name in MODULES_OF_EXTRA[extra] if importlib.util.find_spec(name) is None]


def require(extra: str, package: str) -> None:
    """Raise MissingExtraError when `package` (the role's code) lacks a library of `extra`."""
    absent = missing(extra)
    if absent:
        raise MissingExtraError(
            f"{package} needs the '{extra}' extra, which is not installed "
            f"(missing: {', '.join(absent)}): pip install 'studentperf[{extra}]'"
        )


def require_module(module: str, package: str) -> None:
    """Raise MissingExtraError when `module` (the one library `package` needs beyond the
    client's) cannot be imported, naming the extras that bring it: for a command any of several
    roles runs, such as `studentperf-migrate` (asyncpg)."""
    if importlib.util.find_spec(module) is not None:
        return
    bringing = [extra for extra, modules in MODULES_OF_EXTRA.items() if module in modules]
    lightest = min(bringing, key=lambda extra: len(MODULES_OF_EXTRA[extra]))
    raise MissingExtraError(
        f"{package} needs {module}, which is not installed: pip install "
        f"'studentperf[{lightest}]' (any of the extras {', '.join(bringing)} brings it)"
    )
