"""An expected error leaves the servicer without the frames (and the decoded request) it came
through; an unexpected one keeps them, for the log."""

from __future__ import annotations

import pytest

from inference_service.encoding import InvalidInput
from inference_service.inflight import InFlightBytes
from inference_service.servicer import PredictionServicer, _forgetting_frames
from studentperf.v1 import prediction_service_pb2 as api
from studentperf.v1.student_pb2 import Student, StudentProfile


def frame_names(error: BaseException) -> list[str]:
    names = []
    tb = error.__traceback__
    while tb is not None:
        names.append(tb.tb_frame.f_code.co_name)
        tb = tb.tb_next
    return names


async def decode_and_refuse(refusal: Exception) -> None:
    request = bytearray(1 << 20)  # stands for the decoded request, which must not outlive the call
    try:
        raise KeyError("cause")
    except KeyError:
        request.clear()
        raise refusal from None


async def test_an_expected_error_comes_without_its_frames_or_their_cause() -> None:
    with pytest.raises(InvalidInput) as caught:
        await _forgetting_frames(decode_and_refuse(InvalidInput([])))
    assert "decode_and_refuse" not in frame_names(caught.value)
    context = caught.value.__context__
    assert context is not None and context.__traceback__ is None


async def test_an_unexpected_error_keeps_its_traceback() -> None:
    with pytest.raises(RuntimeError) as caught:
        await _forgetting_frames(decode_and_refuse(RuntimeError("bug")))
    assert "decode_and_refuse" in frame_names(caught.value)


class RefusingCore:
    async def predict(self, *_: object, **__: object) -> None:
        await decode_and_refuse(InvalidInput([]))


async def test_a_small_predict_drops_the_frames_too() -> None:
    """Predict's own path for small requests, which does not go through _forgetting_frames."""
    servicer = PredictionServicer(
        RefusingCore(),  # type: ignore[arg-type]
        in_flight=InFlightBytes(1 << 20, small=1024),
    )
    student = Student(profile=StudentProfile(student_id="s1"))
    request = api.PredictRequest(student=student).SerializeToString()
    unwrapped = PredictionServicer.Predict.__wrapped__  # type: ignore[attr-defined]
    with pytest.raises(InvalidInput) as caught:
        await unwrapped(servicer, request, None)
    assert "decode_and_refuse" not in frame_names(caught.value)
    assert "predict" not in frame_names(caught.value)
