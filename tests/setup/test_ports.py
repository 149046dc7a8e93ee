"""Who holds a port: /proc read for real, the running service told apart from strangers."""

from __future__ import annotations

import os
import socket

import pytest

from appliance.errors import AnswerError
from appliance.setup.answers import PORT
from appliance.setup.ports import Holder, check_bindable, check_listen_address, listening_holders


def test_the_holder_of_a_listening_socket_is_this_process() -> None:
    with socket.socket(socket.AF_INET6) as s:
        s.bind(("::1", 0))
        s.listen(1)
        port = s.getsockname()[1]
        holders = list(listening_holders(port))
    assert [h.pid for h in holders] == [os.getpid()]
    assert holders[0].name
    assert not holders[0].is_tidings(port)


def test_a_port_nobody_listens_on_has_no_holder_and_binds() -> None:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]  # bound, not listening: not a holder
        assert list(listening_holders(port)) == []
    assert check_bindable(PORT, "127.0.0.1", port) is None


def test_the_tidings_service_holding_its_own_port_is_no_conflict() -> None:
    service = Holder(812, "tidings", "/system.slice/tidings.service")
    assert service.is_tidings(443)
    stranger = Holder(813, "nginx", "/system.slice/nginx.service")
    assert not stranger.is_tidings(443)
    # systemd itself (pid 1) counts only for ports tidings.socket holds; without
    # systemd running here, for none.
    assert not Holder(1, "systemd", "/init.scope").is_tidings(443)


def test_a_listening_port_is_refused_on_the_address_it_is_held_on() -> None:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        s.listen(1)
        port = s.getsockname()[1]
        with pytest.raises(AnswerError, match=rf"port {port} on 127.0.0.1 is in use by .*"
                                              rf"\(pid {os.getpid()}\)") as caught:
            check_bindable(PORT, "127.0.0.1", port)
    assert caught.value.question == "port"


@pytest.mark.parametrize(("raw", "expected"), [("", ""), ("*", ""), ("0.0.0.0", "0.0.0.0"),
                                               ("[::1]", "::1"), (" 127.0.0.1 ", "127.0.0.1")])
def test_listen_addresses_are_ip_literals_or_every_address(raw: str, expected: str) -> None:
    assert check_listen_address(raw) == expected
