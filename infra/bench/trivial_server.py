"""The ceiling for the serving benchmark: PredictionService.Predict answering a constant.

The same proto, the same grpc.aio runtime and the same reflection as the real service, but no
work at all in the handler: the most calls per second Python gRPC manages on this machine. It
runs on the event loop the service runs on (`--event-loop`, by default the service's default,
inference_service.event_loop), so the ratio of the two measures the service's own work, not a
difference of loops; the benchmark also runs it on asyncio's loop to show what uvloop buys.

    python -m infra.bench.trivial_server --port 50061 [--event-loop uvloop|asyncio]
"""

from __future__ import annotations

import argparse
import asyncio
import signal
from typing import Any

import grpc

from inference_service import event_loop, reflection
from studentperf.v1 import prediction_service_pb2 as api
from studentperf.v1 import prediction_service_pb2_grpc as api_grpc

SERVICE_NAME = api.DESCRIPTOR.services_by_name["PredictionService"].full_name

_ANSWER = api.PredictResponse(
    prediction=api.Prediction(
        prediction_id="00000000-0000-4000-8000-000000000000",
        predicted_final_score=71.5,
        pass_probability=0.82,
        predicted_pass=True,
        model_version="constant",
        pass_mark=50.0,
    )
)


class ConstantServicer(api_grpc.PredictionServiceServicer):
    async def Predict(
        self, request: api.PredictRequest, context: grpc.aio.ServicerContext[Any, Any]
    ) -> api.PredictResponse:
        return _ANSWER


async def serve(port: int) -> None:
    server = grpc.aio.server()
    # Only Predict is measured: the stubs declare every method abstract, the generated base
    # answers the others UNIMPLEMENTED.
    servicer = ConstantServicer()  # type: ignore[abstract]
    api_grpc.add_PredictionServiceServicer_to_server(servicer, server)
    reflection.enable((SERVICE_NAME,), server)
    server.add_insecure_port(f"127.0.0.1:{port}")
    await server.start()
    stop = asyncio.Event()
    for sig in (signal.SIGTERM, signal.SIGINT):
        asyncio.get_running_loop().add_signal_handler(sig, stop.set)
    await stop.wait()
    await server.stop(1)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--port", type=int, required=True)
    parser.add_argument(
        "--event-loop", choices=event_loop.EVENT_LOOPS, default=event_loop.default_event_loop()
    )
    args = parser.parse_args()
    event_loop.run(serve(args.port), args.event_loop)


if __name__ == "__main__":
    main()
