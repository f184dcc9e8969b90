-- A new replica whose pointer names a version that does not load there (made for another pass
-- mark, another scikit-learn) has no version of its own to fall back on, and would not start:
-- it falls back to the version the pointer's version replaced when promoted, and so on back
-- (studentperf/persistence/artifacts.py REPLACED_VERSIONS, inference_service/reload.py). 0017
-- gave the replicas nothing of the moves; they now read what that walk needs, which versions a
-- promotion went from and to, and not who moved the pointer, when or why.
GRANT SELECT (id, from_version, to_version, kind) ON model_pointer_moves TO studentperf_inference;
