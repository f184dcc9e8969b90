"""The trainer's rows: every outcome, joined to its student's current facts (trainer/db_source.py).

One row per (student, term) outcome, described by the student's facts as `students` holds them
(student_facts), sorted by student and term, so the same table gives the same frame.
"""

from __future__ import annotations

from typing import Final

from studentperf.persistence.student_facts import FACTS

LABELLED_ROWS: Final = f"""
SELECT o.student_id, o.term, o.final_score, {", ".join(f"s.{c}" for c in FACTS)}
FROM outcomes o
JOIN students s USING (student_id)
ORDER BY o.student_id, o.term
"""
