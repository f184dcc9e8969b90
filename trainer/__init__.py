"""Offline training: builds the two scikit-learn pipelines and publishes them as an artifact.

Run it with `python -m trainer` (or `make train`). The inference service never imports this
package: it loads what `studentperf.model_artifact` wrote.
"""

from studentperf.extras import require

# Before any module of this package imports its libraries: name the extra when they are missing.
require("trainer", "trainer")
