-- Many machines (issue 17): a promoted version reaches every inference replica through the
-- database instead of a shared disk. The trainer stores each saved version's files (model.joblib,
-- metadata.json and its extras) with the SHA-256 of each, and moves the `current` pointer when it
-- promotes; each replica follows the pointer, downloads the files to its own models folder and
-- refuses any whose bytes do not hash to what the trainer recorded, before unpickling anything
-- (studentperf/model_store.py). Since a pickle is code, only the trainer writes here: a replica
-- (the inference role) only reads, so a compromised replica cannot hand the others a model.
--
-- Names are checked here as well as in the code: a version and a file name become paths on
-- every replica, so neither may hold a slash or start with a dot.
CREATE TABLE model_artifacts (
    model_version text PRIMARY KEY CHECK (model_version ~ '^[0-9A-Za-z][0-9A-Za-z._-]*$'),
    stored_at timestamptz NOT NULL DEFAULT now()
);

CREATE TABLE model_artifact_files (
    model_version text NOT NULL REFERENCES model_artifacts,
    file_name text NOT NULL CHECK (file_name ~ '^[0-9A-Za-z][0-9A-Za-z._-]*$'),
    content bytea NOT NULL,
    sha256 text NOT NULL CHECK (sha256 ~ '^[0-9a-f]{64}$'),
    PRIMARY KEY (model_version, file_name)
);

-- One row, named `current`: the version every replica serves. It can only name a stored version.
CREATE TABLE model_pointer (
    name text PRIMARY KEY CHECK (name = 'current'),
    model_version text NOT NULL REFERENCES model_artifacts,
    moved_at timestamptz NOT NULL DEFAULT now()
);

-- The trainer stores versions (never changes one) and moves the pointer (trainer/train.py).
GRANT SELECT, INSERT ON model_artifacts, model_artifact_files TO studentperf_trainer;
GRANT SELECT, INSERT, UPDATE ON model_pointer TO studentperf_trainer;
-- The replicas only read (inference_service/model_follower.py).
GRANT SELECT ON model_artifacts, model_artifact_files, model_pointer TO studentperf_inference;
