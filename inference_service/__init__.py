"""The gRPC prediction service: validates, predicts, publishes one event per prediction."""

from studentperf.extras import require

# Before any module of this package imports its libraries: name the extra when they are missing.
require("server", "inference_service")
