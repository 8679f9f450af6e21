"""bgworker's benchmarks (``make bench``), apart from the tests; they write docs/performance.md."""
