"""All SQL lives in studentperf/persistence/ (issue 18): a scan of every string literal of the
installed packages (pyproject's packages.find) and of infra/ (the dev stack, the benchmarks,
the demo) for text that starts like a statement.

tests/ is outside the rule, on purpose: a test reads what landed by its own queries, so it
checks the statements rather than repeats them.
"""

from __future__ import annotations

import ast
import re
import subprocess
import sys
from pathlib import Path

REPO = Path(__file__).resolve().parents[2]
# The installed packages, and the repository's own tools.
PACKAGES = ("studentperf", "inference_service", "recorder_service", "trainer", "infra")
PERSISTENCE = REPO / "studentperf" / "persistence"
GENERATED = REPO / "studentperf" / "v1"

# Upper-case, as every statement of this project is written; a word alone (a file called
# "LOCK") or prose ("Update the ...") is not a statement.
_STATEMENT = re.compile(
    r"\A\s*(SELECT|INSERT\s+INTO|UPDATE|DELETE\s+FROM|WITH|CREATE|ALTER|DROP|TRUNCATE|GRANT"
    r"|REVOKE|SET\s+(LOCAL\s+)?ROLE|LOCK\s+TABLE|COPY|VALUES)\s"
)


def sql_literals(source: str) -> list[tuple[int, str]]:
    """(line, first line of text) of each string literal, or piece of an f-string, that starts
    like an SQL statement."""
    found = []
    for node in ast.walk(ast.parse(source)):
        if not (isinstance(node, ast.Constant) and isinstance(node.value, str)):
            continue
        if _STATEMENT.match(node.value):
            found.append((node.lineno, node.value.strip().splitlines()[0]))
    return sorted(found)


def _sources() -> list[Path]:
    files = [path for package in PACKAGES for path in (REPO / package).rglob("*.py")]
    return sorted(
        p for p in files if not p.is_relative_to(PERSISTENCE) and not p.is_relative_to(GENERATED)
    )


def test_no_sql_outside_the_persistence_package() -> None:
    sources = _sources()
    assert len(sources) > 50  # the scan sees the packages, not an empty folder
    assert {p.relative_to(REPO).parts[0] for p in sources} == set(PACKAGES)
    outside = [
        f"{path.relative_to(REPO)}:{line}: {text}"
        for path in sources
        for line, text in sql_literals(path.read_text(encoding="utf-8"))
    ]
    assert outside == [], "SQL outside studentperf/persistence/:\n" + "\n".join(outside)


def test_the_persistence_package_holds_the_statements() -> None:
    inside = [
        hit
        for path in PERSISTENCE.rglob("*.py")
        for hit in sql_literals(path.read_text(encoding="utf-8"))
    ]
    assert len(inside) >= 20


def test_the_scan_finds_each_way_sql_is_written() -> None:
    source = '''
ONE = """
SELECT a FROM t
"""
TWO = f"DELETE FROM {table} WHERE id = $1"
THREE = (
    "INSERT INTO t (a) "
    "VALUES ($1)"
)
FOUR = "  WITH x AS (SELECT 1) SELECT * FROM x"
FIVE = f"SET LOCAL ROLE {role}"
NOT_SQL = ["LOCK", "Update the model", "select a branch", "WITHOUT a term"]
'''
    assert [line for line, _ in sql_literals(source)] == [2, 5, 7, 10, 11]


def test_importing_the_persistence_package_loads_no_driver_or_library() -> None:
    # A fresh interpreter: this one has imported them for other tests.
    modules = [p.stem for p in PERSISTENCE.glob("*.py") if p.stem != "__init__"]
    script = (
        "import sys\n"
        + "".join(f"import studentperf.persistence.{m}\n" for m in modules)
        + "heavy = ('asyncpg', 'aiokafka', 'numpy', 'pandas', 'sklearn', 'grpc')\n"
        + "print(sorted(m for m in heavy if m in sys.modules))\n"
    )
    done = subprocess.run(
        [sys.executable, "-c", script], cwd=REPO, capture_output=True, text=True, check=True
    )
    print(f"\nimported {len(modules)} persistence modules; heavy libraries loaded: {done.stdout}")
    assert done.stdout.strip() == "[]"
