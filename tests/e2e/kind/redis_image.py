"""A Redis image built here, for clusters whose nodes reach no registry (E2E_NODE_PULLS=0).

Debian's redis-server on the same base as bgworker's images (tests/e2e/docker_images.py),
run by the chart exactly like the default ``redis`` image: ``sh -c "exec redis-server ..."``
as uid 999, data in /data. Tagged by the base's tag, so it is built once per base.
"""

from __future__ import annotations

import hashlib
from pathlib import Path

from tests.e2e.commands import run
from tests.e2e.docker_images import image_exists

DOCKERFILE = Path(__file__).resolve().parent / "redis.Dockerfile"


def build_redis(base_image: str) -> str:
    """``bgworker-e2e-redis:<key>`` on ``base_image``, built unless it exists."""
    key = hashlib.sha256(f"{base_image}\n{DOCKERFILE.read_text()}".encode()).hexdigest()[:12]
    ref = f"bgworker-e2e-redis:{key}"
    if not image_exists(ref):
        run(
            "docker", "build", "--network", "host",
            "--build-arg", f"BASE_IMAGE={base_image}",
            "--file", str(DOCKERFILE), "--tag", ref, str(DOCKERFILE.parent),
            timeout=900,
        )  # fmt: skip
    return ref
