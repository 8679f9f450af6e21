"""End-to-end suites against real containers and a kind cluster (see the e2e issue)."""
