"""`helm upgrade` with unchanged values must not restart anything.

An upgrade replaces each workload's pod template with a fresh render; any difference rolls
the pods (Redis restarting drops every connection). The generated Redis password is the
one input that differs between renders (``helm template`` has no cluster for redis/secret.yaml's
``lookup``, exactly like a first install), so two renders stand for install and upgrade.
The real-cluster suite saw the first upgrade after install restart Redis and every pod
while their checksum covered a randomly drawn password.
"""

from __future__ import annotations

from tests.chart.render import VALUE_SETS, render


def pod_templates(values):
    return {w["metadata"]["name"]: w["spec"]["template"] for w in render(values).workloads()}


def test_two_renders_give_the_same_pod_templates():
    for name, values in VALUE_SETS.items():
        first, second = pod_templates(values), pod_templates(values)
        changed = [w for w in first if first[w] != second.get(w)]
        assert not changed, f"value set {name}: pod templates differ between renders: {changed}"
