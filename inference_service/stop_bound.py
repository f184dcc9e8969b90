"""How long a service's graceful stop (`RunningServer.stop`) may take: the one sum that the
workers' supervisor waits for before it kills a worker, and that the deployments' grace periods
(Kubernetes, compose) are checked against. Each step of the stop is bounded; a step added to the
stop adds its bound here."""

from __future__ import annotations

from inference_service.delivery import FLUSH_BOUND_S
from inference_service.history_store import STATEMENT_TIMEOUT_S
from inference_service.model_follower import CLOSE_TIMEOUT_S as FOLLOWER_CLOSE_S
from inference_service.settings import Settings

# Handlers still running after grpc's stop returned (grpc/grpc#37239) get the grace and this.
IN_FLIGHT_MARGIN_S = 1.0


def longest_stop_s(settings: Settings) -> float:
    """The server's stop (the grace), the last micro-batches (a publish timeout), handlers still
    running (the grace and a margin), the producer's flush, then the model follower's and the
    history pool's closes, each bounded for a database that stopped answering."""
    grace = settings.shutdown_grace_s
    handlers = grace + IN_FLIGHT_MARGIN_S
    closes = FOLLOWER_CLOSE_S + STATEMENT_TIMEOUT_S
    return grace + settings.publish_timeout_s + handlers + FLUSH_BOUND_S + closes
