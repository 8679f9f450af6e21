"""A Docker engine, a base image, and bgworker's two images: what both e2e suites build on.

The images are built from ``images/Dockerfile`` exactly as a user builds them; only
``BASE_IMAGE`` may differ. Where the default base (``python:3.12-slim``) is not on the
machine and the tests run as root, the base is made here: a ``debootstrap`` of the
host's own Debian release with python3, the host's CA bundle copied in (pip inside the
build needs it), imported with ``docker import`` and tagged by a content key, so it is
made once per machine and rebuilt only when what went into it changes. Only a user who
is not root (and so cannot debootstrap) gets the default base pulled.

Environment:
- ``E2E_BASE_IMAGE``: the base to build on (e.g. ``python:3.12-slim`` where a
  registry is reachable: ``docker build`` then pulls it).
"""

from __future__ import annotations

import hashlib
import json
import os
import re
import shutil
import subprocess
import tempfile
import time
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

from cluster.host import apt_get_install
from tests.e2e.commands import run

REPO = Path(__file__).resolve().parents[2]
DOCKERFILE = REPO / "images" / "Dockerfile"
DEFAULT_BASE = "python:3.12-slim"
TARGETS = ("api", "worker")
BASE_PACKAGES = ("python3", "python3-venv", "ca-certificates")
CA_BUNDLE = Path("/etc/ssl/certs/ca-certificates.crt")
# Part of the base image's content key: bump it when the recipe below changes.
BASE_RECIPE = "2"


class Unavailable(Exception):
    """Docker (or what a local base needs) is missing and cannot be provided here.

    The message says what is missing and what to do; the suites skip with it (a skip
    that tests/conftest.py turns into a failure under ``CI=true``).
    """


@dataclass
class Engine:
    """A reachable Docker engine; ``daemon`` is set when this process started it."""

    daemon: subprocess.Popen[bytes] | None = None

    def stop(self) -> None:
        """Stop a daemon we started (one that was already running is left alone)."""
        if self.daemon is not None and self.daemon.poll() is None:
            self.daemon.terminate()
            try:
                self.daemon.wait(30)
            except subprocess.TimeoutExpired:
                self.daemon.kill()
                self.daemon.wait(10)


def is_root() -> bool:
    return os.geteuid() == 0


def apt_install(*packages: str) -> None:
    """Install Debian packages (root only), or raise :class:`Unavailable` saying which."""
    names = " ".join(packages)
    if not is_root():
        raise Unavailable(
            f"{names} is not installed and only root may install it: install it "
            f"(Debian: sudo apt-get install {names}) or run the tests as root, which installs it"
        )
    if shutil.which("apt-get") is None:
        raise Unavailable(
            f"{names} is not installed and this machine has no apt-get to install it with: "
            "install it with this system's package manager"
        )
    try:
        apt_get_install(packages, timeout=600)
    except RuntimeError as exc:
        raise Unavailable(str(exc)) from None


def docker_info_error() -> str | None:
    """None when ``docker info`` answers; otherwise what went wrong, in docker's words."""
    try:
        result = subprocess.run(
            ["docker", "info"],
            capture_output=True,
            text=True,
            timeout=30,
            stdin=subprocess.DEVNULL,
        )
    except (OSError, subprocess.TimeoutExpired) as exc:
        return str(exc)
    if result.returncode == 0:
        return None
    lines = [line for line in result.stderr.splitlines() if line.strip()]
    return lines[-1].strip() if lines else f"exit status {result.returncode}"


def start_dockerd(log_dir: Path) -> Engine:
    """Start ``dockerd`` (root) and wait until ``docker info`` answers; ours to stop."""
    log_dir.mkdir(parents=True, exist_ok=True)
    log_path = log_dir / "dockerd.log"
    with log_path.open("ab") as log:
        # Its own session: Ctrl-C on the tests must not take the daemon down mid-build.
        daemon = subprocess.Popen(["dockerd"], stdout=log, stderr=log, start_new_session=True)
    deadline = time.monotonic() + 60
    while docker_info_error() is not None:
        if daemon.poll() is not None or time.monotonic() > deadline:
            daemon.kill()
            daemon.wait(10)
            tail = log_path.read_text(errors="replace")[-2000:]
            raise Unavailable(f"dockerd did not start (its log: {log_path}):\n{tail}")
        time.sleep(0.5)
    return Engine(daemon)


# Debian's package of the Docker engine: dockerd, its containerd and runc, and a client.
ENGINE_PACKAGE = "docker.io"


def ensure_engine(
    log_dir: Path,
    *,
    which: Callable[[str], str | None] = shutil.which,
    root: Callable[[], bool] = is_root,
    install: Callable[[str], None] = apt_install,
    info_error: Callable[[], str | None] = docker_info_error,
    start: Callable[[Path], Engine] = start_dockerd,
) -> Engine:
    """A Docker engine that answers ``docker info``, made so when we are root.

    An engine already answering is used as it is. Otherwise, as root: Debian's docker.io
    is installed when the client or the engine (``dockerd``) is missing (a machine may
    have only a client, as this project's do), then ``dockerd`` is started, and stopped
    again by :meth:`Engine.stop`. Not as root: :class:`Unavailable` says which of the
    three (client, engine, access to a running engine) is missing and how to get it.
    The callables are the machine, passed in by the tests of this decision.
    """
    client = which("docker")
    if client is not None:
        error = info_error()
        if error is None:
            return Engine()
    else:
        error = None
    daemon = which("dockerd")
    if not root():
        raise Unavailable(_not_root_reason(client, daemon, error))
    if client is None or daemon is None:
        install(ENGINE_PACKAGE)
        client, daemon = which("docker"), which("dockerd")
        if client is None or daemon is None:
            missing = "docker" if client is None else "dockerd"
            raise Unavailable(
                f"apt-get installed {ENGINE_PACKAGE}, yet {missing} is not on PATH "
                f"({os.environ.get('PATH', '')}): add the directory dpkg -L {ENGINE_PACKAGE} "
                "puts it in to PATH and re-run"
            )
        # A package whose maintainer script started the service (no policy-rc.d here):
        # that engine is the system's now, not ours to stop.
        if info_error() is None:
            return Engine()
    return start(log_dir)


def _not_root_reason(client: str | None, daemon: str | None, error: str | None) -> str:
    """Why a user who is not root has no Docker engine, and what to do about it."""
    install = f"sudo apt-get install {ENGINE_PACKAGE}"
    as_root = ", or run the tests as root, which installs and starts it"
    if client is None and daemon is None:
        return f"Docker is not installed (no docker, no dockerd on PATH): {install}{as_root}"
    if daemon is None:
        return (
            f"only the Docker client is installed ({client}; `docker info`: {error}); "
            f"the engine, dockerd, is not on PATH: {install} and start it "
            f"(sudo systemctl start docker){as_root}"
        )
    if client is None:
        return (
            f"dockerd is installed ({daemon}) but the docker client is not on PATH: "
            f"{install} (it has both){as_root}"
        )
    if error is not None and "permission denied" in error.lower():
        return (
            f"a Docker engine runs but this user may not use its socket (`docker info`: "
            f"{error}): add the user to the docker group (sudo usermod -aG docker $USER, "
            "then log in again) or run the tests as root"
        )
    return (
        f"the Docker engine ({daemon}) is installed but does not answer (`docker info`: "
        f"{error}): start it (sudo systemctl start docker, or sudo dockerd), or run the "
        "tests as root, which starts it"
    )


def image_exists(ref: str) -> bool:
    return run("docker", "image", "inspect", ref, check=False).returncode == 0


def image_size(ref: str) -> int:
    return int(run("docker", "image", "inspect", "--format", "{{.Size}}", ref).stdout)


# --- the base image -------------------------------------------------------------------


def host_release(os_release: str) -> str:
    """The host's release codename (``bookworm``) from the text of /etc/os-release."""
    fields = dict(
        line.split("=", 1) for line in os_release.splitlines() if "=" in line and line[0] != "#"
    )
    codename = fields.get("VERSION_CODENAME", "").strip().strip('"')
    if not codename:
        raise Unavailable("cannot tell the Debian release: /etc/os-release has no codename")
    return codename


def apt_mirror(codename: str, sources: dict[str, str]) -> str:
    """The first mirror serving ``codename`` in apt's sources (file name → text).

    Both formats: deb822 ``*.sources`` (``URIs:``/``Suites:`` stanzas) and one-line
    ``deb [options] URI SUITE COMPONENTS``. Read from the host, never written down:
    every machine has its own mirror.
    """
    for name, text in sorted(sources.items()):
        if name.endswith(".sources"):
            for stanza in re.split(r"\n\s*\n", text):
                fields: dict[str, str] = {}
                for line in stanza.splitlines():
                    key, sep, value = line.partition(":")
                    if sep and not line.startswith((" ", "#")):
                        fields[key.strip().lower()] = value.strip()
                types = fields.get("types", "").split()
                suites = fields.get("suites", "").split()
                enabled = fields.get("enabled", "yes").lower() != "no"
                if enabled and "deb" in types and codename in suites and fields.get("uris"):
                    return fields["uris"].split()[0]
        elif name.endswith(".list"):
            for line in text.splitlines():
                parts = re.sub(r"\[[^\]]*\]", " ", line).split()
                if len(parts) >= 3 and parts[0] == "deb" and parts[2] == codename:
                    return parts[1]
    raise Unavailable(f"no apt source for {codename} in /etc/apt: cannot debootstrap a base")


def read_apt_sources() -> dict[str, str]:
    paths = [Path("/etc/apt/sources.list"), *sorted(Path("/etc/apt/sources.list.d").glob("*"))]
    return {p.name: p.read_text(errors="replace") for p in paths if p.is_file()}


def base_key(codename: str, ca_bundle: bytes) -> str:
    """What the local base is made of, hashed: the same inputs give the same tag."""
    recipe = {
        "recipe": BASE_RECIPE,
        "release": codename,
        "packages": sorted(BASE_PACKAGES),
        "ca": hashlib.sha256(ca_bundle).hexdigest(),
    }
    return hashlib.sha256(json.dumps(recipe, sort_keys=True).encode()).hexdigest()[:12]


def local_base() -> str:
    """A base image made with debootstrap from the host's release and mirror, cached by key."""
    codename = host_release(Path("/etc/os-release").read_text())
    if not CA_BUNDLE.is_file():
        raise Unavailable(f"{CA_BUNDLE} is missing: pip inside the build would trust nothing")
    tag = f"bgworker-e2e-base:{codename}-{base_key(codename, CA_BUNDLE.read_bytes())}"
    if image_exists(tag):
        return tag
    if shutil.which("debootstrap") is None:
        apt_install("debootstrap")
    mirror = apt_mirror(codename, read_apt_sources())
    # Under /var/tmp: /tmp is often a small tmpfs and the tree is about 170 MB.
    with tempfile.TemporaryDirectory(prefix="bgworker-base-", dir="/var/tmp") as tmp:
        root = Path(tmp) / "rootfs"
        run(
            "debootstrap",
            "--variant=minbase",
            f"--include={','.join(BASE_PACKAGES)}",
            codename,
            str(root),
            mirror,
            timeout=900,
        )
        shutil.copyfile(CA_BUNDLE, root / "etc/ssl/certs/ca-certificates.crt")
        # What slim images leave out too: the downloaded .debs and apt's package lists
        # (about 95 MB; the Dockerfile installs no system packages).
        for leftover in (root / "var/cache/apt/archives", root / "var/lib/apt/lists"):
            for path in leftover.glob("*"):
                if path.is_file():
                    path.unlink()
        tar = subprocess.Popen(["tar", "-C", str(root), "-c", "."], stdout=subprocess.PIPE)
        imported = subprocess.run(
            ["docker", "import", "-", tag], stdin=tar.stdout, capture_output=True, timeout=600
        )
        assert tar.stdout is not None
        tar.stdout.close()
        if tar.wait() != 0 or imported.returncode != 0:
            raise AssertionError(f"docker import of {root} failed: {imported.stderr[-2000:]!r}")
    return tag


def choose_base() -> str:
    """``E2E_BASE_IMAGE``; else the default base if present; else a local one made with
    debootstrap (root); else the default base pulled (a user with Docker but not root).

    As root nothing is pulled: the machines this project is developed on reach no registry,
    and a pull would only wait for a timeout.
    """
    chosen = os.environ.get("E2E_BASE_IMAGE")
    if chosen:
        return chosen
    if image_exists(DEFAULT_BASE):
        return DEFAULT_BASE
    if is_root():
        return local_base()
    pulled = run("docker", "pull", DEFAULT_BASE, timeout=600, check=False)
    if pulled.returncode != 0:
        raise Unavailable(
            f"no base image: {DEFAULT_BASE} cannot be pulled ({pulled.stderr.strip()[-300:]}) "
            "and making one with debootstrap needs root; set E2E_BASE_IMAGE to an image with "
            "python3 (>= 3.11) and its venv module"
        )
    return DEFAULT_BASE


# --- bgworker's images ------------------------------------------------------------------


@dataclass
class Built:
    ref: str
    seconds: float
    size: int


def build(target: str, tag: str, base_image: str) -> Built:
    """``docker build`` one target of images/Dockerfile from the repository root."""
    ref = f"bgworker-{target}:{tag}"
    started = time.monotonic()
    run(
        "docker",
        "build",
        # pip inside the build reaches PyPI the way the host does.
        "--network",
        "host",
        "--build-arg",
        f"BASE_IMAGE={base_image}",
        "--file",
        str(DOCKERFILE),
        "--target",
        target,
        "--tag",
        ref,
        str(REPO),
        timeout=1800,
    )
    return Built(ref, time.monotonic() - started, image_size(ref))


def build_all(tag: str, base_image: str | None = None) -> dict[str, Built]:
    base = base_image or choose_base()
    return {target: build(target, tag, base) for target in TARGETS}


def build_images(tag: str, base_image: str | None = None) -> dict[str, str]:
    """Both images, built; their references by target (``{"api": "bgworker-api:TAG"}``)."""
    return {target: built.ref for target, built in build_all(tag, base_image).items()}
