"""Shared fixtures.

``netns``, ``sshd_server`` and ``adbd_server`` start real things: a network namespace
(``ip netns``), OpenSSH's sshd and Android's adbd listening on 127.0.0.1 inside it. They
need root; elsewhere they skip with the reason. System packages they need are installed
with apt on first use (``tests/netns.py: ensure_system_package``).
"""

from __future__ import annotations

import sys
from collections.abc import Iterator
from pathlib import Path

import pytest

sys.path.insert(0, str(Path(__file__).resolve().parent))

import netns as _netns  # noqa: E402  (tests/netns.py, a helper module beside this file)

_NETNS_REASON: list[str | None] = []


def _netns_reason() -> str | None:
    if not _NETNS_REASON:
        _NETNS_REASON.append(_netns.netns_unavailable_reason())
    return _NETNS_REASON[0]


@pytest.fixture
def netns() -> Iterator[str]:
    """A fresh network namespace ``hwnas-test-<random>`` with loopback up; deleted afterwards."""
    reason = _netns_reason()
    if reason:
        pytest.skip(reason)
    name = _netns.create_netns()
    try:
        yield name
    finally:
        _netns.delete_netns(name)


@pytest.fixture
def sshd_server(netns: str, tmp_path: Path) -> Iterator[_netns.SSHServer]:
    """A real OpenSSH server on 127.0.0.1:<random port> inside ``netns``.

    Throw-away host and user keys in ``tmp_path``; ``known_hosts`` holds the host key.
    Yields an :class:`netns.SSHServer` (host, port, user, key_file, known_hosts, ns).
    """
    try:
        server = _netns.start_sshd(netns, tmp_path / "sshd")
    except RuntimeError as exc:
        pytest.skip(f"cannot start sshd: {exc}")
    try:
        yield server
    finally:
        server.stop()


@pytest.fixture
def adbd_server(netns: str, tmp_path: Path) -> Iterator[_netns.ADBServer]:
    """A real adbd (Debian's ``adbd``) on a random port inside ``netns``, only for this test.

    adbd listens on every interface of the namespace and on vsock (which no namespace
    isolates), so it runs only while the test does and is killed afterwards.
    """
    try:
        server = _netns.start_adbd(netns, tmp_path)
    except RuntimeError as exc:
        pytest.skip(f"cannot start adbd: {exc}")
    try:
        yield server
    finally:
        server.stop()
