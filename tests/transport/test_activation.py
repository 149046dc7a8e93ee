"""Adopting the sockets systemd passes (sd_listen_fds(3)), in a process of their own.

Each case runs a small program through the same wrapper the end-to-end tests
use (tests/support/activation.py): real sockets at descriptors 3 and up,
``LISTEN_PID`` its own pid, then `listen_sockets()`.
"""

from __future__ import annotations

import json
import os
import socket
import subprocess
import sys
from collections.abc import Callable

import pytest

from appliance.errors import ConfigError
from appliance.transport.activation import assign_roles, listen_sockets
from tests.support.activation import activated, listener
from tests.support.components import REPO

_PROBE = r"""
import json, os, socket
from appliance.errors import ConfigError
from appliance.transport.activation import listen_sockets
try:
    found = listen_sockets()
except ConfigError as exc:
    print(json.dumps({"error": str(exc)}))
else:
    print(json.dumps({
        "roles": {role: sock.getsockname()[1] for role, sock in found.items()},
        "cloexec": all(not os.get_inheritable(s.fileno()) for s in found.values()),
        "blocking": any(s.getblocking() for s in found.values()),
        "env": sorted(k for k in os.environ if k.startswith("LISTEN_")),
    }))
"""


def _probe(sockets: list[socket.socket], names: list[str] | None = None,
           env: dict[str, str] | None = None) -> dict[str, object]:
    argv, fds = activated([sys.executable, "-c", _PROBE], sockets, names)
    done = subprocess.run(argv, pass_fds=fds, capture_output=True, text=True, timeout=60,
                          cwd=REPO, env={**os.environ, **(env or {})}, check=False)
    assert done.returncode == 0, done.stderr
    result: dict[str, object] = json.loads(done.stdout)
    return result


def test_named_sockets_take_their_roles_whatever_the_order() -> None:
    main, redirect = listener(), listener()
    with main, redirect:
        got = _probe([redirect, main], ["redirect", "main"])
        assert got == {"roles": {"main": main.getsockname()[1],
                                 "redirect": redirect.getsockname()[1]},
                       "cloexec": True, "blocking": False, "env": []}


def test_unnamed_sockets_take_the_roles_in_order() -> None:
    """One socket unit names all its sockets alike: the ListenStream= order decides."""
    first, second = listener(), listener()
    with first, second:
        for names in (None, ["tidings.socket", "tidings.socket"]):
            got = _probe([first, second], names)
            assert got["roles"] == {"main": first.getsockname()[1],
                                    "redirect": second.getsockname()[1]}


def test_one_socket_is_the_main_one() -> None:
    only = listener()
    with only:
        assert _probe([only])["roles"] == {"main": only.getsockname()[1]}


def test_a_redirect_socket_alone_leaves_the_main_port_to_the_configuration() -> None:
    only = listener()
    with only:
        assert _probe([only], ["redirect"])["roles"] == {"redirect": only.getsockname()[1]}


@pytest.mark.parametrize(("make", "what"), [
    (lambda: socket.socket(socket.AF_INET, socket.SOCK_DGRAM), "AF_INET SOCK_DGRAM"),
    (lambda: socket.socket(socket.AF_INET, socket.SOCK_STREAM),
     "AF_INET SOCK_STREAM, not listening"),
    (lambda: socket.socket(socket.AF_UNIX, socket.SOCK_STREAM),
     "AF_UNIX SOCK_STREAM, not listening"),
])
def test_a_socket_that_is_no_listening_tcp_socket_is_refused_by_name(
        make: Callable[[], socket.socket], what: str) -> None:
    with make() as bad:
        got = _probe([bad], ["main"])
    assert got == {"error": f"tidings.socket: descriptor 3 (main) is not a listening TCP"
                            f" socket ({what}); the socket unit needs ListenStream= with a"
                            f" port or address:port"}


def test_a_descriptor_that_is_no_socket_is_refused() -> None:
    read, write = os.pipe()
    try:
        argv, fds = activated([sys.executable, "-c", _PROBE], [read], ["main"])
        done = subprocess.run(argv, pass_fds=fds, capture_output=True, text=True,
                              timeout=60, cwd=REPO, check=True)
    finally:
        os.close(read)
        os.close(write)
    assert json.loads(done.stdout) == {
        "error": "tidings.socket: descriptor 3 (main) is not a socket: Socket operation"
                 " on non-socket"}


def test_three_sockets_are_too_many() -> None:
    socks = [listener() for _ in range(3)]
    try:
        got = _probe(socks)
    finally:
        for s in socks:
            s.close()
    assert "systemd passed '3' sockets" in str(got["error"])


def test_sockets_for_another_process_are_left_alone_and_the_variables_cleared() -> None:
    env = {"LISTEN_PID": "1", "LISTEN_FDS": "1", "LISTEN_FDNAMES": "main"}
    assert listen_sockets(env) == {}
    assert env == {}


def test_no_variables_no_sockets() -> None:
    assert listen_sockets({}) == {}


@pytest.mark.parametrize("count", ["0", "-1", "x", "99999999999999999999"])
def test_a_nonsense_count_is_refused(count: str) -> None:
    with pytest.raises(ConfigError, match=r"tidings\.socket: systemd passed"):
        listen_sockets({"LISTEN_PID": str(os.getpid()), "LISTEN_FDS": count})


def test_names_must_match_the_count() -> None:
    with pytest.raises(ConfigError, match="LISTEN_FDNAMES names 1 sockets, LISTEN_FDS says 2"):
        listen_sockets({"LISTEN_PID": str(os.getpid()), "LISTEN_FDS": "2",
                        "LISTEN_FDNAMES": "main"})


def test_two_sockets_for_one_role_are_refused() -> None:
    with pytest.raises(ConfigError, match="two sockets are named for one role"):
        assign_roles(["main", "main"])


def test_roles_fill_around_named_sockets() -> None:
    assert assign_roles(["x", "main"]) == ["redirect", "main"]
    assert assign_roles(["redirect", "unknown"]) == ["redirect", "main"]
