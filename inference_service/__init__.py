"""The gRPC prediction service: validates, predicts, publishes one event per prediction."""
