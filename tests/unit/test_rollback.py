"""studentperf-rollback: which version it chooses (trainer.rollback), and the folder case end to
end: the `current` link moves only to a version that exists and whose bytes verify."""

from __future__ import annotations

import hashlib
import json
import os
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any, cast

import pandas as pd
import pytest

from studentperf.model_artifact import CURRENT, FILES_SHA256, MODEL_FILE, save_artifact
from studentperf.model_folder import (
    PROMOTIONS_FILE,
    local_versions,
    note_promotion,
    read_promotions,
    verify_local,
)
from studentperf.model_store import ArtifactRefused, Published
from trainer import synthetic
from trainer.fit import fit_and_evaluate
from trainer.pipeline import logistic, ridge
from trainer.promote import promote_if_not_worse
from trainer.rollback import RollbackRefused, choose_version
from trainer.rollback_cli import main

T0 = datetime(2026, 1, 1, tzinfo=UTC)


def at(hours: int) -> datetime:
    return T0 + timedelta(hours=hours)


HISTORY = [
    Published("v1", at(1)),
    Published("v2", at(2)),
    Published("v2b", None),  # saved, refused by the gate
    Published("v3", at(3)),
]


def test_without_a_name_it_goes_back_to_the_promotion_before_the_current() -> None:
    choice = choose_version(None, "v3", HISTORY)
    assert choice.version == "v2" and "promoted before v3" in choice.reason
    # Walking back: the rollback promoted nothing, so from v2 the previous is v1.
    assert choose_version(None, "v2", HISTORY).version == "v1"
    # A current the history does not know (moved by hand): the latest promotion.
    assert choose_version(None, "v2b", HISTORY).version == "v3"


def test_it_refuses_when_there_is_nothing_to_go_back_to() -> None:
    with pytest.raises(RollbackRefused, match="no version was promoted before v1"):
        choose_version(None, "v1", HISTORY)
    with pytest.raises(RollbackRefused, match="no version is served yet"):
        choose_version(None, None, HISTORY)
    with pytest.raises(RollbackRefused, match=r"no version was promoted before v1.*none is"):
        choose_version(None, "v1", [])


# Promotions noted with the version each replaced: v1 first, v2 over v1, then v2 rolled back to
# v1 (a rollback promotes nothing), then v3 promoted over v1.
NOTED = [
    Published("v1", at(1), None, True),
    Published("v2", at(2), "v1", True),
    Published("v3", at(3), "v1", True),
]


def test_without_a_name_it_serves_what_the_current_replaced_never_a_version_taken_off() -> None:
    choice = choose_version(None, "v3", NOTED)
    assert choice.version == "v1", "v2 was rolled back: v3 replaced v1"
    assert choice.reason.startswith("the version v3 replaced when promoted")
    assert choose_version(None, "v2", NOTED).version == "v1"
    with pytest.raises(RollbackRefused, match="v1, the one served, was the first version"):
        choose_version(None, "v1", NOTED)
    with pytest.raises(RollbackRefused, match="v3 replaced v1, which is not held here"):
        choose_version(None, "v3", NOTED[1:])


def test_a_named_version_must_exist() -> None:
    assert choose_version("v1", "v3", HISTORY).version == "v1"
    with pytest.raises(RollbackRefused, match=r"version v9 does not exist.*v3 \(current\)"):
        choose_version("v9", "v3", HISTORY)
    # Named, it may be one the gate never promoted: the operator is told so.
    assert "never promoted" in choose_version("v2b", "v3", HISTORY).reason
    assert choose_version("v3", "v3", HISTORY).already_current


@pytest.fixture(scope="module")
def fitted() -> object:
    return fit_and_evaluate(
        synthetic.generate(300, 5),
        pass_mark=50.0,
        seed=5,
        score_options=[ridge(1.0)],
        pass_options=[logistic(1.0)],
    ).model


def saved(models: Path, fitted: object, hour: int, *, promote: bool = True) -> str:
    """A version saved at `hour`, and promoted as the gate does unless `promote` is False."""
    link = models / CURRENT
    replacing = link.readlink().name if link.is_symlink() else None
    version = save_artifact(
        models,
        fitted,  # type: ignore[arg-type]
        fingerprint=f"{hour:08x}",
        details={},
        created_at=at(hour),
        make_current=promote,
        extra_files={"reference_inputs.csv": b"a,b\n1,2\n"},
    ).name
    if promote:
        note_promotion(models, version, replaced=replacing, at=at(hour))
    return version


def test_a_saved_version_records_the_sha256_of_each_of_its_files(
    tmp_path: Path, fitted: object
) -> None:
    version = saved(tmp_path, fitted, 1)
    metadata = json.loads((tmp_path / version / "metadata.json").read_text())
    assert set(metadata[FILES_SHA256]) == {MODEL_FILE, "reference_inputs.csv"}
    for name, digest in metadata[FILES_SHA256].items():
        assert hashlib.sha256((tmp_path / version / name).read_bytes()).hexdigest() == digest
    assert verify_local(tmp_path, version) == 2
    assert read_promotions(tmp_path) == {version: at(1)}


def current(models: Path) -> str:
    return (models / CURRENT).readlink().name


def test_the_folder_rollback_moves_current_back_and_says_so(
    tmp_path: Path, fitted: object, capsys: pytest.CaptureFixture[str]
) -> None:
    first, second = saved(tmp_path, fitted, 1), saved(tmp_path, fitted, 2)
    refused = saved(tmp_path, fitted, 3, promote=False)
    assert current(tmp_path) == second
    args = ["--source", "folder", "--models-dir", str(tmp_path)]
    assert main(args) == 0
    out = capsys.readouterr().out
    assert current(tmp_path) == first
    assert f"{second} -> {first}" in out and "2 files verified" in out
    # Nothing before the first promotion: refused, exit 2, the link stays.
    assert main(args) == 2
    assert f"{first}, the one served, was the first version promoted" in capsys.readouterr().err
    assert current(tmp_path) == first
    # Named: forward again, or to the version the gate refused.
    assert main([*args, second]) == 0 and current(tmp_path) == second
    assert main([*args, refused]) == 0 and current(tmp_path) == refused
    assert "never promoted" in capsys.readouterr().out
    assert main([*args, refused]) == 0
    assert "nothing to do" in capsys.readouterr().out


def test_the_folder_rollback_refuses_a_missing_or_altered_version(
    tmp_path: Path, fitted: object, capsys: pytest.CaptureFixture[str]
) -> None:
    first, second = saved(tmp_path, fitted, 1), saved(tmp_path, fitted, 2)
    args = ["--source", "folder", "--models-dir", str(tmp_path)]
    assert main([*args, "20990101T000000Z-00000000"]) == 2
    err = capsys.readouterr().err
    assert "version 20990101T000000Z-00000000 does not exist" in err and "nothing moved" in err
    with (tmp_path / first / MODEL_FILE).open("ab") as model:
        model.write(b"\0")  # one byte appended to the pickle
    assert main(args) == 2
    err = capsys.readouterr().err
    assert f"version {first}: {MODEL_FILE} hashes to" in err and "nothing moved" in err
    assert current(tmp_path) == second
    # A version from before hashes were recorded cannot be verified: refused too.
    metadata_path = tmp_path / first / "metadata.json"
    metadata = json.loads(metadata_path.read_text())
    del metadata[FILES_SHA256]
    metadata_path.write_text(json.dumps(metadata))
    with pytest.raises(ArtifactRefused, match="records no SHA-256"):
        verify_local(tmp_path, first)
    # Nor does a forged metadata.json send the check to files outside the version's folder.
    for name in ("sub/model.joblib", "../model.joblib", ".hidden"):
        metadata[FILES_SHA256] = {name: "0" * 64, MODEL_FILE: "0" * 64}
        metadata_path.write_text(json.dumps(metadata))
        with pytest.raises(ArtifactRefused, match="names a file"):
            verify_local(tmp_path, first)
    assert main([*args, first]) == 2 and current(tmp_path) == second
    assert main(["--source", "folder", "--models-dir", str(tmp_path / "none")]) == 2


def test_the_current_link_and_the_promotion_log_are_no_versions(
    tmp_path: Path, fitted: object, capsys: pytest.CaptureFixture[str]
) -> None:
    first, second = saved(tmp_path, fitted, 1), saved(tmp_path, fitted, 2)
    assert sorted(p.name for p in tmp_path.iterdir()) == sorted(
        [CURRENT, PROMOTIONS_FILE, first, second]
    )
    assert [v.version for v in local_versions(tmp_path)] == [first, second]
    # A version saved but never promoted: what it replaced is not known, not "nothing".
    unpromoted = saved(tmp_path, fitted, 3, promote=False)
    found = {v.version: v for v in local_versions(tmp_path)}[unpromoted]
    assert (found.promoted_at, found.replaced, found.replaced_known) == (None, None, False)
    args = ["--source", "folder", "--models-dir", str(tmp_path)]
    assert main([*args, CURRENT]) == 2
    assert f"version {CURRENT} does not exist" in capsys.readouterr().err
    assert current(tmp_path) == second


def test_a_torn_line_in_the_promotion_log_is_skipped(tmp_path: Path) -> None:
    note_promotion(tmp_path, "v1", replaced=None, at=at(1))
    with (tmp_path / PROMOTIONS_FILE).open("a") as log:
        log.write('{"version": "v2", "promo')
    assert read_promotions(tmp_path) == {"v1": at(1)}
    with (tmp_path / PROMOTIONS_FILE).open("a") as log:
        log.write("\n")  # a promotion after the torn line (a crash mid-write, then another)
    note_promotion(tmp_path, "v3", replaced="v1", at=at(3))
    assert read_promotions(tmp_path) == {"v1": at(1), "v3": at(3)}
    os.remove(tmp_path / PROMOTIONS_FILE)
    assert read_promotions(tmp_path) == {}


def test_the_folder_rollback_does_not_go_back_to_a_version_it_took_off(
    tmp_path: Path, fitted: object, capsys: pytest.CaptureFixture[str]
) -> None:
    first, second = saved(tmp_path, fitted, 1), saved(tmp_path, fitted, 2)
    args = ["--source", "folder", "--models-dir", str(tmp_path)]
    assert main(args) == 0 and current(tmp_path) == first  # the second judged bad
    third = saved(tmp_path, fitted, 3)  # promoted over the first
    assert main(args) == 0
    assert f"{third} -> {first}" in capsys.readouterr().out
    assert current(tmp_path) == first, f"not back to {second}, which a rollback took off"


def test_a_promotion_over_a_version_the_gate_cannot_load_notes_what_it_replaced(
    tmp_path: Path, fitted: object
) -> None:
    first = saved(tmp_path, fitted, 1)
    (tmp_path / first / MODEL_FILE).write_bytes(b"not a pickle")
    second = saved(tmp_path, fitted, 2, promote=False)
    # The gate promotes over a current it cannot load, comparing nothing.
    no_metrics = cast(Any, None)
    decision = promote_if_not_worse(tmp_path, second, no_metrics, pd.DataFrame(), pass_mark=50.0)
    assert decision.promoted and decision.current_version is None
    [noted] = [p for p in local_versions(tmp_path) if p.version == second]
    assert (noted.replaced, noted.replaced_known) == (first, True), "not 'the first version'"
    # So a rollback goes back to it, and refuses it for its bytes, saying so.
    with pytest.raises(ArtifactRefused, match="hashes to"):
        verify_local(tmp_path, choose_version(None, second, local_versions(tmp_path)).version)
