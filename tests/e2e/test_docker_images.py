"""How the container suite gets a Docker engine, finds a Debian mirror and names its base
image: the decisions, on a described machine (no Docker needed)."""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path

import pytest

from tests.e2e.docker_images import (
    Engine,
    Unavailable,
    apt_mirror,
    base_key,
    ensure_engine,
    host_release,
)

DEB822 = """\
Types: deb
# http://snapshot.debian.org/archive/debian/20250520T000000Z
URIs: http://mirror.example/debian
Suites: bookworm bookworm-updates
Components: main
Signed-By: /usr/share/keyrings/debian-archive-keyring.gpg

Types: deb
URIs: http://mirror.example/debian-security
Suites: bookworm-security
Components: main
"""


def test_release_codename_from_os_release() -> None:
    text = 'PRETTY_NAME="Debian GNU/Linux 12 (bookworm)"\nVERSION_CODENAME=bookworm\nID=debian\n'
    assert host_release(text) == "bookworm"
    with pytest.raises(Unavailable, match="codename"):
        host_release("ID=debian\n")


def test_mirror_from_deb822_sources() -> None:
    sources = {"debian.sources": DEB822}
    assert apt_mirror("bookworm", sources) == "http://mirror.example/debian"


def test_mirror_from_one_line_sources_with_options() -> None:
    sources = {
        "sources.list": "# deb http://old.example/debian bookworm main\n"
        "deb-src http://src.example/debian bookworm main\n"
        "deb [arch=amd64 signed-by=/k.gpg] http://mirror.example/debian bookworm main\n"
    }
    assert apt_mirror("bookworm", sources) == "http://mirror.example/debian"


def test_disabled_stanzas_and_other_suites_are_skipped() -> None:
    sources = {
        "a.sources": "Enabled: no\nTypes: deb\nURIs: http://off.example\nSuites: bookworm\n",
        "b.sources": "Types: deb\nURIs: http://node.example\nSuites: nodistro\n",
        "c.list.disabled-by-farm": "deb http://ignored.example bookworm main\n",
        "d.sources": DEB822,
    }
    assert apt_mirror("bookworm", sources) == "http://mirror.example/debian"
    with pytest.raises(Unavailable, match="no apt source for trixie"):
        apt_mirror("trixie", sources)


def test_base_key_changes_with_what_goes_into_the_base() -> None:
    key = base_key("bookworm", b"CA bundle")
    assert key == base_key("bookworm", b"CA bundle")
    assert key != base_key("trixie", b"CA bundle")
    assert key != base_key("bookworm", b"another CA bundle")


# --- which engine, and what to do for one (the real path runs in test_containers.py) -----

NOT_RUNNING = (
    "Cannot connect to the Docker daemon at unix:///var/run/docker.sock. "
    "Is the docker daemon running?"
)
NO_ACCESS = (
    "permission denied while trying to connect to the Docker daemon socket at "
    "unix:///var/run/docker.sock: connect: permission denied"
)


@dataclass
class Machine:
    """What ensure_engine asks of a machine, and a record of what it did to it.

    Installing docker.io puts both binaries on PATH (unless ``install_puts`` says
    otherwise); starting dockerd makes ``docker info`` answer.
    """

    binaries: dict[str, str]
    root: bool
    info_error: str | None = NOT_RUNNING
    install_puts: tuple[str, ...] = ("docker", "dockerd")
    service_starts_on_install: bool = False
    installed: list[str] = field(default_factory=list)
    started: list[Path] = field(default_factory=list)

    def which(self, name: str) -> str | None:
        return self.binaries.get(name)

    def is_root(self) -> bool:
        return self.root

    def install(self, package: str) -> None:
        self.installed.append(package)
        for name in self.install_puts:
            self.binaries[name] = f"/usr/{'s' if name == 'dockerd' else ''}bin/{name}"
        if self.service_starts_on_install:
            self.info_error = None

    def docker_info_error(self) -> str | None:
        return self.info_error if "docker" in self.binaries else "no docker client"

    def start(self, log_dir: Path) -> Engine:
        self.started.append(log_dir)
        self.info_error = None
        return Engine(daemon=None)

    def ensure(self, log_dir: Path) -> Engine:
        return ensure_engine(
            log_dir,
            which=self.which,
            root=self.is_root,
            install=self.install,
            info_error=self.docker_info_error,
            start=self.start,
        )


CLIENT_ONLY = {"docker": "/usr/local/bin/docker"}
CLIENT_AND_ENGINE = {"docker": "/usr/bin/docker", "dockerd": "/usr/sbin/dockerd"}


def test_root_with_only_a_client_installs_the_engine_and_starts_it(tmp_path: Path) -> None:
    """This project's machines: a docker client, no dockerd, the tests run as root."""
    machine = Machine(dict(CLIENT_ONLY), root=True)
    machine.ensure(tmp_path)
    assert machine.installed == ["docker.io"]
    assert machine.started == [tmp_path]


def test_root_without_docker_installs_and_starts_it(tmp_path: Path) -> None:
    machine = Machine({}, root=True)
    machine.ensure(tmp_path)
    assert (machine.installed, machine.started) == (["docker.io"], [tmp_path])


def test_root_with_an_engine_that_is_not_running_starts_it(tmp_path: Path) -> None:
    machine = Machine(dict(CLIENT_AND_ENGINE), root=True)
    machine.ensure(tmp_path)
    assert (machine.installed, machine.started) == ([], [tmp_path])


@pytest.mark.parametrize("root", [True, False], ids=["root", "user"])
def test_an_answering_engine_is_used_as_it_is(tmp_path: Path, root: bool) -> None:
    """Not ours: nothing installed, nothing started, nothing to stop at the end."""
    machine = Machine(dict(CLIENT_ONLY), root=root, info_error=None)
    assert machine.ensure(tmp_path).daemon is None
    assert (machine.installed, machine.started) == ([], [])


def test_an_engine_the_package_started_is_not_started_again(tmp_path: Path) -> None:
    machine = Machine(dict(CLIENT_ONLY), root=True, service_starts_on_install=True)
    assert machine.ensure(tmp_path).daemon is None
    assert (machine.installed, machine.started) == (["docker.io"], [])


def test_an_install_that_leaves_dockerd_off_path_says_so(tmp_path: Path) -> None:
    machine = Machine(dict(CLIENT_ONLY), root=True, install_puts=("docker",))
    with pytest.raises(Unavailable, match="installed docker.io, yet dockerd is not on PATH"):
        machine.ensure(tmp_path)
    assert machine.started == []


def user_reason(machine: Machine, tmp_path: Path) -> str:
    """The message a user who is not root gets; nothing may have been tried for them."""
    with pytest.raises(Unavailable) as raised:
        machine.ensure(tmp_path)
    assert (machine.installed, machine.started) == ([], [])
    reason = str(raised.value)
    assert "cannot start it" not in reason  # the old message, which blamed the user
    return reason


def test_user_with_only_a_client_is_told_the_engine_is_missing(tmp_path: Path) -> None:
    reason = user_reason(Machine(dict(CLIENT_ONLY), root=False), tmp_path)
    assert "only the Docker client is installed (/usr/local/bin/docker" in reason
    assert "dockerd, is not on PATH" in reason
    assert NOT_RUNNING in reason  # docker's own words, for the record
    assert "sudo apt-get install docker.io" in reason
    assert "run the tests as root" in reason


def test_user_without_docker_is_told_to_install_it(tmp_path: Path) -> None:
    reason = user_reason(Machine({}, root=False), tmp_path)
    assert reason.startswith("Docker is not installed (no docker, no dockerd on PATH)")
    assert "sudo apt-get install docker.io" in reason


def test_user_with_a_stopped_engine_is_told_to_start_it(tmp_path: Path) -> None:
    reason = user_reason(Machine(dict(CLIENT_AND_ENGINE), root=False), tmp_path)
    assert "engine (/usr/sbin/dockerd) is installed but does not answer" in reason
    assert "sudo systemctl start docker" in reason
    assert "apt-get" not in reason  # nothing to install


def test_user_without_access_to_a_running_engine_is_told_about_the_group(
    tmp_path: Path,
) -> None:
    machine = Machine(dict(CLIENT_AND_ENGINE), root=False, info_error=NO_ACCESS)
    reason = user_reason(machine, tmp_path)
    assert "a Docker engine runs but this user may not use its socket" in reason
    assert "usermod -aG docker" in reason
    assert "start" not in reason  # it runs already
