"""Why a call failed, for programs: the google.rpc.ErrorInfo `reason` the server attaches to
some statuses (domain ERROR_DOMAIN), so that a client acts on a fact, not on a message's words.
"""

from __future__ import annotations

from typing import Final

ERROR_DOMAIN: Final = "studentperf.v1"

# UNAVAILABLE after the call's events were handed to Kafka but neither acknowledged in time nor
# written to the spool (full, or its disk failing): the broker may still take them, so what the
# call would have recorded may be recorded. A retry of Predict or BatchPredict makes new
# predictions (new ids) beside them; the client does not retry it unless told to.
MAY_BE_RECORDED: Final = "MAY_BE_RECORDED"
