"""`python -m trainer.import_csv PATH`: import a Kaggle-format exam CSV through Kafka.

Each good row becomes an ImportEvent (trainer.import_events): a student (id derived from the
file's hash and the row's line, see trainer.kaggle) with the profile the file gives, and an
outcome for `--term` (final score = math score), published to the events topic keyed by the
student id; the recorder writes it, by the same merge rule as every other event. Each bad row
is reported with its line number and reason, and the good rows are still published. Event ids
are derived from the file, the line and the term, so importing the same file again stores
nothing new.

With --wait (the default) the import returns once the recorder has stored every row, read
through the importer's read-only role; --no-wait returns once Kafka acknowledged every event.
Exit status: 0 when every row was published (and stored), 1 when the file could not be read,
Kafka did not acknowledge every event, or --wait gave up (what was published stays in Kafka and
is stored when the recorder runs; importing again is harmless), 3 when some rows were bad (the
others were published, and stored).
"""

from __future__ import annotations

import argparse
import asyncio
import os
import sys
import time
from collections.abc import Sequence
from dataclasses import dataclass
from datetime import UTC, datetime
from pathlib import Path
from typing import TextIO

from studentperf import envelope
from studentperf.config import ConfigError, DatabaseRole, SharedSettings, mask_dsn
from studentperf.outcomes import TERM_RULE, term_is_valid
from trainer import kaggle
from trainer.import_events import import_event
from trainer.import_publisher import PublishFailed, publish_all
from trainer.import_wait import WaitGaveUp, wait_until_stored

EXIT_BAD_ROWS = 3
DEFAULT_PUBLISH_TIMEOUT_S = 30.0
DEFAULT_STALL_TIMEOUT_S = 60.0
# How often a long wait says how far it got.
_PROGRESS_EVERY_S = 2.0


@dataclass(frozen=True)
class ImportReport:
    file: kaggle.KaggleFile
    event_ids: tuple[str, ...]  # one per good row, in the file's order
    published: int
    stored: int | None  # rows the recorder had stored when the import returned; None: no wait


class _Progress:
    """Prints "<what> n of total" to `out` at most every few seconds, and at the end."""

    def __init__(self, out: TextIO | None, what: str) -> None:
        self._out = out
        self._what = what
        self._last = time.monotonic()

    def __call__(self, done: int, total: int) -> None:
        now = time.monotonic()
        if self._out is not None and (done == total or now - self._last >= _PROGRESS_EVERY_S):
            self._last = now
            print(f"{self._what} {done:,} of {total:,} rows", file=self._out, flush=True)


async def import_file(
    path: Path,
    *,
    shared: SharedSettings,
    term: str,
    wait: bool = True,
    stall_timeout_s: float = DEFAULT_STALL_TIMEOUT_S,
) -> ImportReport:
    """Reads `path` and imports its good rows (see import_rows); raises KaggleFormatError,
    PublishFailed or WaitGaveUp."""
    return await import_rows(
        kaggle.read(path), shared=shared, term=term, wait=wait, stall_timeout_s=stall_timeout_s
    )


async def import_rows(
    found: kaggle.KaggleFile,
    *,
    shared: SharedSettings,
    term: str,
    wait: bool = True,
    publish_timeout_s: float = DEFAULT_PUBLISH_TIMEOUT_S,
    stall_timeout_s: float = DEFAULT_STALL_TIMEOUT_S,
    progress: TextIO | None = None,
) -> ImportReport:
    """Publishes an event per good row of `found` to `shared`'s topic and, with `wait`, waits
    until the recorder has stored them (read from `shared.database_url`). Raises PublishFailed
    or WaitGaveUp."""
    occurred_at = datetime.now(UTC)
    events = [
        import_event(r, file_sha256=found.sha256, term=term, occurred_at=occurred_at)
        for r in found.rows
    ]
    total = len(events)
    published_progress = _Progress(progress, "published")
    published = 0
    if events:  # a file of bad rows only needs no broker
        published = await publish_all(
            shared,
            [envelope.encode_import(e) for e in events],
            timeout_s=publish_timeout_s,
            progress=lambda done: published_progress(done, total),
        )
    ids = tuple(e.event_id for e in events)
    stored = None
    if wait:
        stored = await wait_until_stored(
            shared.database_url,
            ids,
            stall_timeout_s=stall_timeout_s,
            progress=_Progress(progress, "stored by the recorder"),
        )
    return ImportReport(found, ids, published, stored)


def print_bad_rows(found: kaggle.KaggleFile, errors: TextIO) -> None:
    for error in found.errors:
        print(f"{found.path}:{error.line}: {error.reason}", file=errors)


def print_report(report: ImportReport, out: TextIO) -> None:
    found = report.file
    stored = "" if report.stored is None else f", {report.stored} stored by the recorder"
    print(
        f"{found.path}: {len(found.rows) + len(found.errors)} rows read,"
        f" {len(found.errors)} bad rows skipped, {report.published} events published{stored}",
        file=out,
    )


def main(argv: Sequence[str] | None = None) -> int:
    default_term = f"{datetime.now(UTC).year}-import"
    parser = argparse.ArgumentParser(prog="python -m trainer.import_csv", description=__doc__)
    parser.add_argument("path", type=Path, help="a CSV in the Kaggle exam format")
    parser.add_argument(
        "--term",
        default=default_term,
        help=f"the term the scores are for (default {default_term}); {TERM_RULE}",
    )
    parser.add_argument(
        "--wait",
        action=argparse.BooleanOptionalAction,
        default=True,
        help="wait until the recorder has stored every row (default); --no-wait returns once"
        " Kafka acknowledged every event",
    )
    parser.add_argument(
        "--stall-timeout",
        type=float,
        default=DEFAULT_STALL_TIMEOUT_S,
        help="seconds --wait waits for the recorder to store another row before giving up"
        f" (default {DEFAULT_STALL_TIMEOUT_S:g})",
    )
    parser.add_argument(
        "--publish-timeout",
        type=float,
        default=DEFAULT_PUBLISH_TIMEOUT_S,
        help="seconds to wait for Kafka to acknowledge another event before giving up"
        f" (default {DEFAULT_PUBLISH_TIMEOUT_S:g})",
    )
    try:
        shared = SharedSettings.from_env(os.environ, DatabaseRole.IMPORTER)
    except ConfigError as err:
        parser.error(str(err))
    parser.add_argument(
        "--database-url",
        default=shared.database_url,
        help="where --wait reads (env STUDENTPERF_DATABASE_URL; the importer's read-only role)",
    )
    args = parser.parse_args(argv)
    if not term_is_valid(args.term):
        parser.error(f"--term {args.term!r}: {TERM_RULE}")
    for name in ("stall_timeout", "publish_timeout"):
        if not getattr(args, name) > 0:
            parser.error(f"--{name.replace('_', '-')} must be a positive number of seconds")
    shared = SharedSettings(
        kafka_bootstrap_servers=shared.kafka_bootstrap_servers,
        kafka_topic=shared.kafka_topic,
        database_url=args.database_url,
        kafka_security=shared.kafka_security,
    )
    try:
        found = kaggle.read(args.path)
    except kaggle.KaggleFormatError as err:
        print(f"error: {err}", file=sys.stderr)
        return 1
    print_bad_rows(found, sys.stderr)
    try:
        report = asyncio.run(
            import_rows(
                found,
                shared=shared,
                term=args.term,
                wait=args.wait,
                publish_timeout_s=args.publish_timeout,
                stall_timeout_s=args.stall_timeout,
                progress=sys.stdout,
            )
        )
    except PublishFailed as err:
        print(f"error: {err}; importing the file again is harmless", file=sys.stderr)
        return 1
    except WaitGaveUp as err:
        print(
            f"error: published every row to {shared.kafka_topic}, but the recorder stored"
            f" {err.stored} of {err.total} ({err}); the rest are in Kafka and are stored when"
            " the recorder runs (check its dead-letter topic if they never are)",
            file=sys.stderr,
        )
        return 1
    print_report(report, sys.stdout)
    where = f"stored in {mask_dsn(args.database_url)}" if args.wait else "not waited for"
    print(
        f"topic {shared.kafka_topic} at {shared.kafka_bootstrap_servers}, term {args.term}; {where}"
    )
    return EXIT_BAD_ROWS if report.file.errors else 0


if __name__ == "__main__":
    sys.exit(main())
