# Entry points that are not the default test command (./scripts/test).
#   make e2e    both end-to-end suites: the images in Docker here, then the chart with KEDA
#               on a kind cluster it creates and deletes (tests/e2e/kind/README.md). Where
#               docker, kind, kubectl or helm is missing the kind tests skip, naming it;
#               E2E_REQUIRE=1 (the CI workflow) turns that skip into a failure.
#   make bench  every benchmark on this machine; writes docs/performance.md (about 12
#               minutes on 2 cores).

.PHONY: bench e2e

bench:
	bench/setup.sh
	.venv/bin/python -m bench

e2e:
	scripts/bootstrap.sh test
	E2E_KIND=1 .venv/bin/pytest tests/e2e
