"""A seeded, time-bounded chaos soak: real Redis, API and workers under faults, checked
from outside.

``python -m tests.chaos --mode mixed --seconds 600 --seed 7`` runs it by hand;
``tests/chaos/test_soak.py`` runs one CI-sized soak per mode. The pieces: ``config``
(knobs, the processes' settings, the bounds derived from them), ``processes`` (the
system under test), ``workload`` (jobs with known outcomes, submitted over HTTP),
``faults`` (the seeded fault loop), ``redis_state`` (where each job's message is, its
record and events), ``logs`` (the workers' lines about each job), ``aof`` (Redis'
append-only file read back as evidence), ``checks`` (the verdict), ``figures`` (printed,
and written into docs/performance.md) and ``soak`` (one run, start to clean-up).
"""
