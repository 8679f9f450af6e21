# Entry points that are not tests. `make bench` runs every benchmark on this machine and
# writes docs/performance.md (about 12 minutes on 2 cores).

.PHONY: bench

bench:
	bench/setup.sh
	.venv/bin/python -m bench
