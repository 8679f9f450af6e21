# Entry points beside the everyday test command (./scripts/test).
#   make cluster       a real single-node Kubernetes with KEDA on this machine, built from
#                      upstream Go modules (cluster/README.md; root; the first build takes a
#                      while, later starts take about a minute); prints its kubeconfig
#   make cluster-down  stop it and remove everything it made
#   make e2e           the cluster suite (tests/e2e/kind) on that cluster: brought up when it
#                      is not running and taken down again; E2E_KUBECONFIG=FILE runs it on
#                      another cluster (kind, ...), see tests/e2e/kind/README.md
#   make bench         every benchmark on this machine; writes docs/performance.md (about 12
#                      minutes on 2 cores)

.PHONY: bench cluster cluster-down e2e

bench:
	bench/setup.sh
	.venv/bin/python -m bench

cluster:
	scripts/bootstrap.sh test
	.venv/bin/python -m cluster up

cluster-down:
	scripts/bootstrap.sh test
	.venv/bin/python -m cluster down

e2e:
	scripts/e2e
