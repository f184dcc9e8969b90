"""Every test and tool that starts an inference service gives it a spool folder of its own.

The default folder is the development service's (`make up`); a test spooling into it once
delivered its events into the development topic and database (issue 14).
"""

from __future__ import annotations

import ast
from pathlib import Path

from inference_service.settings import Settings

ROOT = Path(__file__).resolve().parents[2]
# The models folder's name, and the deprecated one a service still reads.
MODELS_DIR_NAMES = {"STUDENTPERF_MODELS_DIR", "STUDENTPERF_MODEL_PATH"}
SOURCES = sorted([*ROOT.glob("tests/**/*.py"), *ROOT.glob("infra/**/*.py")])


def _settings_without_a_spool(tree: ast.AST) -> list[int]:
    """Lines of `InferenceSettings(...)` calls that name no spool_dir."""
    lines = []
    for node in ast.walk(tree):
        if isinstance(node, ast.Call) and ast.unparse(node.func) == "InferenceSettings":
            named = {keyword.arg for keyword in node.keywords}
            if node.keywords and "spool_dir" not in named and None not in named:
                lines.append(node.lineno)
    return lines


def _environments_without_a_spool(tree: ast.AST) -> list[int]:
    """Lines of environments for a service process (they name its model) with no spool."""
    lines = []
    for node in ast.walk(tree):
        if isinstance(node, ast.Dict):
            keys = {key.value for key in node.keys if isinstance(key, ast.Constant)}
            if keys & MODELS_DIR_NAMES and "STUDENTPERF_SPOOL_DIR" not in keys:
                lines.append(node.lineno)
    return lines


def test_every_inference_service_started_by_a_test_or_tool_has_its_own_spool() -> None:
    found = []
    for path in SOURCES:
        tree = ast.parse(path.read_text(), filename=str(path))
        for line in _settings_without_a_spool(tree) + _environments_without_a_spool(tree):
            found.append(f"{path.relative_to(ROOT)}:{line}")
    assert SOURCES and not found, f"inference services on the default spool folder: {found}"


def test_the_default_spool_folder_is_the_development_state_not_the_repository_root() -> None:
    default = Path(Settings().spool_dir)
    assert not default.is_absolute() and default.parts[0] == ".local"  # git-ignored state
    assert Settings.from_env({}).spool_dir == Settings().spool_dir
