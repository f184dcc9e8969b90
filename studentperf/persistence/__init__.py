"""Every SQL statement the processes run, named, one module per area; nothing else holds SQL.

- `student_facts`: the one rule that merges what any writer says into `students`.
- `outcomes`: the one rule that stores a student's outcome for a term, and the direct writer
  the tests use to lay out a database.
- `recording`: the recorder's batch: its staging table and the statement that spreads it.
- `imports`: which import events the recorder has stored (`imported_rows`).
- `erasure`, `retention`: the recorder's deletions, each under its own role (and the erasure's
  audit row, which the inference service reads back).
- `history`: a student's recorded predictions, a page at a time (the inference service).
- `training`: the trainer's labelled rows; `registry`: a trained version's `model_versions` row.
- `monitor`: what the monitor reads.
- `artifacts`: versions' files with their SHA-256 and the `current` pointer, for replicas on
  many machines (studentperf/model_store.py: the trainer writes, the inference service reads).
- `schema`: the migration runner's bookkeeping (the migrations are `studentperf/migrations/`).
- `cluster`: the dev stack's bootstrap of a PostgreSQL cluster (readiness, roles, databases);
  `demo`: what `make demo` reads back; `benchmarks`: the benchmarks' synthetic seeds and reads.
  None of these is run by a process of the service.

The modules build text and run nothing themselves, but for `history.fetch_page` and
`outcomes.store_outcomes`; each process keeps its own control flow (transactions, retries,
splitting). They import no driver at run time, and neither `studentperf` nor its client
imports them. tests/unit/test_sql_ownership.py fails when SQL appears anywhere else in the
installed packages or in infra/ (tests/ queries the database itself).
"""
