"""How the container suite finds a Debian mirror and names its base image (no Docker needed)."""

from __future__ import annotations

import pytest

from tests.e2e.docker_images import Unavailable, apt_mirror, base_key, host_release

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
