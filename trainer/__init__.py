"""Offline training: builds the two scikit-learn pipelines and publishes them as an artifact.

Run it with `python -m trainer` (or `make train`). The inference service never imports this
package: it loads what `studentperf.model_artifact` wrote.
"""
