"""Answers: typed where they enter, merged by one rule, printed back as an answers file."""

from __future__ import annotations

import tomllib
from pathlib import Path

import pytest

from appliance.errors import AnswerError
from appliance.setup.answers import (
    DEFAULTS,
    HTTP_PORT,
    MAX_ANSWERS_FILE_BYTES,
    PORT,
    TLS,
    Answers,
    applicable,
    from_file,
    from_flags,
    merged,
    missing,
    print_answers,
    typed,
)


def test_the_first_layer_that_says_wins_field_by_field() -> None:
    flags = Answers(port=8443)
    file = Answers(port=9443, app="fromfile")
    existing = Answers(app="existing", hostname="chat.example.com")
    answers = merged(flags, file, existing, DEFAULTS)
    assert (answers.port, answers.app, answers.hostname, answers.http_port) == \
        (8443, "fromfile", "chat.example.com", 80)


def test_only_the_questions_of_the_chosen_tls_mode_are_required() -> None:
    acme = merged(Answers(hostname="a.example.com", app="x"), DEFAULTS)
    assert [q.key for q in missing(acme)] == ["acme_email"]
    files = acme.with_answer(TLS, "files")
    assert [q.key for q in missing(files)] == ["cert", "key"]
    assert "acme_email" not in [q.key for q in applicable(files)]


@pytest.mark.parametrize(("raw", "expected"), [("443", 443), (80, 80), ("none", -1),
                                               ("NONE", -1)])
def test_ports_are_numbers_or_none(raw: object, expected: int) -> None:
    assert typed(HTTP_PORT, raw, "test") == expected


@pytest.mark.parametrize("raw", ["0", "65536", "-1", "1e3", True, 3.5, "443443"])
def test_a_port_out_of_range_or_of_the_wrong_type_is_refused(raw: object) -> None:
    with pytest.raises(AnswerError, match="is not a port number") as caught:
        typed(PORT, raw, "test")
    assert caught.value.question == "port"


def test_flags_are_typed_and_absent_ones_say_nothing() -> None:
    answers = from_flags({"port": "8443", "hostname": " chat.example.com ", "app": None,
                          "hostname_not_local_ok": None})
    assert answers == Answers(port=8443, hostname="chat.example.com")


def test_an_answers_file_too_big_or_not_toml_is_refused(tmp_path: Path) -> None:
    big = tmp_path / "big.toml"
    big.write_text("#" * (MAX_ANSWERS_FILE_BYTES + 1))
    with pytest.raises(AnswerError, match="larger than"):
        from_file(big)
    bad = tmp_path / "bad.toml"
    bad.write_text("port = [\n")
    with pytest.raises(AnswerError, match="is not TOML"):
        from_file(bad)
    typo = tmp_path / "typo.toml"
    typo.write_text("port = true\n")
    with pytest.raises(AnswerError, match=r"port: True in answers file .* is not a port"):
        from_file(typo)


def test_printed_answers_load_back_and_hide_a_database_password() -> None:
    answers = Answers(hostname="chat.example.com", tls="self-signed", port=443, http_port=-1,
                      database="mariadb://app:s3cret@db.example.com:3306/chat", app="x")
    text = print_answers(answers)
    assert "s3cret" not in text
    tree = tomllib.loads(text)
    assert tree["database"] == "mariadb://app:REDACTED@db.example.com:3306/chat"
    assert tree["http_port"] == "none"
    assert "# acme_email = ..." in text  # unanswered questions stay visible, commented
