"""The kind end-to-end suite: the Helm chart with KEDA on a real kind cluster (README.md)."""
