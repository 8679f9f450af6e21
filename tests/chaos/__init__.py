"""A seeded, time-bounded chaos soak: real Redis, API and workers under faults, checked
from outside.

``python -m tests.chaos --mode mixed --seconds 600 --seed 7`` runs it by hand;
``tests/chaos/test_soak.py`` runs one CI-sized soak per mode. The pieces:
``config`` (knobs and the bounds derived from the settings), ``processes`` (the system
under test), ``workload`` (jobs with known outcomes, submitted over HTTP), ``faults``
(the seeded fault loop), ``inspect`` (where a job's message is in Redis), ``aof``
(Redis' append-only file, read back as evidence), ``checks`` (the verdict),
``figures`` (printed, and written into docs/performance.md) and ``soak`` (one run).
"""
