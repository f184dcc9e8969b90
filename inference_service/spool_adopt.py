"""`python -m inference_service.spool adopt`: label spool segments for a destination.

Someone who knows where a refused segment's events belong (a format-1 segment, or a cluster
rebuilt under a new id) labels it for that destination, so a service sending there replays it.
"""

from __future__ import annotations

import argparse
import os
from collections.abc import Sequence
from pathlib import Path

from inference_service.spool_segments import (
    MAGIC,
    Destination,
    encode_frame,
    read_segment,
    write_durably,
)
from studentperf.config import ConfigError
from studentperf.durable import fsync_path, hold_folder_lock


def adopt(segment: Path, destination: Destination) -> int:
    """Rewrites a segment as written for `destination`; returns how many events it holds.

    Takes the folder's lock, so it refuses while a service uses the folder. The new file
    replaces the old one only once it is on disk (written aside, fsync'd, renamed).
    """
    lock = hold_folder_lock(segment.parent, "spool folder")
    try:
        contents = read_segment(segment)
        aside = segment.with_suffix(".adopting")
        data = MAGIC + destination.encode() + b"".join(encode_frame(r) for r in contents.records)
        fd = os.open(aside, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
        try:
            write_durably(fd, data)
        finally:
            os.close(fd)
        os.replace(aside, segment)
        fsync_path(segment.parent)
        return len(contents.records)
    finally:
        os.close(lock)


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(
        prog="python -m inference_service.spool",
        description="Label spool segments for the Kafka cluster and topic their events belong to, "
        "so a service for that destination sends them. Run it while no service uses the folder.",
    )
    commands = parser.add_subparsers(dest="command", required=True)
    adopting = commands.add_parser("adopt", help="label segment files for a destination")
    adopting.add_argument("segments", nargs="+", type=Path, help="the .spool files")
    adopting.add_argument("--topic", required=True)
    adopting.add_argument("--bootstrap-servers", required=True)
    adopting.add_argument(
        "--cluster-id",
        default="",
        help="the cluster's id (the service's refusal names it); without it the segment goes "
        "wherever these bootstrap servers lead",
    )
    args = parser.parse_args(argv)
    destination = Destination(args.topic, args.bootstrap_servers, args.cluster_id)
    try:
        for segment in args.segments:
            count = adopt(segment, destination)
            print(f"{segment}: {count} event(s) now for {destination.describe()}")
    except (ConfigError, OSError) as error:
        print(f"error: {error}")
        return 1
    return 0
