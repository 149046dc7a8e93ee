"""The socket drop-in (one function decides it) and handing the data to the service."""

from __future__ import annotations

from pathlib import Path

from appliance.setup.service import SOCKET_DROPIN, listen_stream, socket_dropins, write_dropins


def test_the_socket_drop_in_replaces_the_units_ports_with_the_answers() -> None:
    assert socket_dropins("", 443, 80) == {SOCKET_DROPIN: (
        "# Written by `tidings setup`: the ports of its answers.\n[Socket]\nListenStream=\n"
        "ListenStream=443\nListenStream=80\n")}
    text = socket_dropins("2001:db8::5", 8443, -1)[SOCKET_DROPIN]
    assert text.endswith("ListenStream=\nListenStream=[2001:db8::5]:8443\n")
    assert listen_stream("192.0.2.5", 80) == "192.0.2.5:80"


def test_drop_ins_are_written_only_when_they_change(tmp_path: Path) -> None:
    target = tmp_path / "tidings.socket.d" / "listen.conf"
    files = {target: socket_dropins("", 443, 80)[SOCKET_DROPIN]}
    assert write_dropins(files) is True
    assert target.read_text() == files[target]
    assert oct(target.stat().st_mode & 0o777) == "0o644"
    assert write_dropins(files) is False
    assert write_dropins({target: socket_dropins("", 8443, 80)[SOCKET_DROPIN]}) is True
    assert "ListenStream=8443\n" in target.read_text()
