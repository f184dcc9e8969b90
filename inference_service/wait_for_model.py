"""`python -m inference_service.wait_for_model`: wait until there is a model to serve.

The service refuses to start without a model. A new installation has none until its first
training, so a pod's init container runs this instead of letting the service crash-loop: with
STUDENTPERF_MODEL_SOURCE=database it follows the database's `current` pointer as the service
does (inference_service.model_follower: downloaded into STUDENTPERF_MODELS_DIR, every SHA-256
checked first, as the inference role), so the service then starts on a folder that already holds
the version; with `folder` it waits for the folder's `current` link. Settings are the service's
own (Settings.from_env), so it reads what the service will read. Exits 0 once a version is
there, 2 on bad settings.

What it brings need not load: that is for the service to find out, with its pass mark and its
libraries, and a new replica whose pointer's version does not load, or was refused unread
(its bytes do not match their SHA-256), starts on the newest version that one replaced that
does load (inference_service.reload, `fall_back`). So a refused pointer's version ends the wait
too, with nothing brought: a training did promote a version, and waiting would keep the pod
from starting until the next promotion, where the service can serve an earlier one now.
"""

from __future__ import annotations

import asyncio
import logging
import os
import sys
from collections.abc import Callable

from inference_service.model_follower import ModelFollower
from inference_service.settings import Settings
from studentperf.config import ConfigError, configure_logging
from studentperf.model_artifact import ModelArtifactError, resolve_version_dir, set_current

log = logging.getLogger(__name__)

CANNOT_START = 2
DEFAULT_INTERVAL_S = 5.0


def local_version(models_dir: str) -> str | None:
    """The version the folder holds to serve: the one its `current` names, or the folder itself
    when it is one version's (fixed)."""
    try:
        return resolve_version_dir(models_dir).name
    except ModelArtifactError:
        return None


async def wait_for_model(
    settings: Settings,
    *,
    interval_s: float = DEFAULT_INTERVAL_S,
    say: Callable[[str], None] = print,
) -> str:
    """Returns the version the service will serve once the models folder holds one, or the
    pointer's version when it was refused (the service then falls back from it)."""
    follower = None
    if settings.model_source == "database":
        follower = ModelFollower(settings.shared.database_url, settings.models_dir)
    try:
        while True:
            # The follower logs why not, once, when it cannot.
            followed = await follower.sync() if follower is not None else None
            linked = local_version(settings.models_dir)
            if followed is not None and linked is None:
                # A new pod's folder: linked, so that the service starts on it even if the
                # database does not answer at that moment (from then on the service moves the
                # link, only to versions it loaded).
                await asyncio.to_thread(set_current, settings.models_dir, followed)
            version = followed or linked
            if version is not None:
                return version
            refusal = follower.refusal if follower is not None else None
            if refusal is not None:
                say(
                    f"the database's pointer names a version refused unread ({refusal}); the "
                    "service starts on the newest version it replaced that loads"
                )
                return refusal.version
            where = "the database's pointer" if follower else f"{settings.models_dir}/current"
            say(f"waiting for a promoted model ({where}); trying again in {interval_s:g} s")
            await asyncio.sleep(interval_s)
    finally:
        if follower is not None:
            await follower.close()


def main() -> None:
    configure_logging(os.environ, default_format="text")
    try:
        settings = Settings.from_env(os.environ)
    except ConfigError as err:
        print(f"cannot wait for a model: {err}", file=sys.stderr)
        raise SystemExit(CANNOT_START) from None
    version = asyncio.run(wait_for_model(settings))
    print(f"model {version}: the service may start on {settings.models_dir}")


if __name__ == "__main__":
    main()
