"""The media type kept from an upload part's Content-Type: a ``type/subtype`` of RFC 7230
tokens, lower-cased, its parameters dropped; anything else is no type at all (the name's
guess is stored instead), so no stored value can break a download's headers."""

from __future__ import annotations

import pytest

from app.domain.files.multipart import media_type
from app.domain.files.service import guess_type


@pytest.mark.parametrize("value,expected", [
    ("text/plain", "text/plain"), ("Text/Plain", "text/plain"),
    ("text/plain; charset=utf-8", "text/plain"), (" \ttext/csv\t ; q", "text/csv"),
    ("application/vnd.openxmlformats-officedocument.spreadsheetml.sheet",
     "application/vnd.openxmlformats-officedocument.spreadsheetml.sheet"),
    ("application/x-www-form-urlencoded", "application/x-www-form-urlencoded"),
    ("a!#$%&'*+.^_`|~-/b", "a!#$%&'*+.^_`|~-/b"),  # every tchar
    (None, None), ("", None), ("text", None), ("text/", None), ("/plain", None),
    ("text/plain\nX-Injected: yes", None), ("text/plain\r\nX: y", None),
    ("text/pl\x01ain", None), ("text/plain\x7f", None), ("text/pl ain", None),
    ("text/plaín", None), ("text/plain/x", None), ('text/"plain"', None),
    ("te(x)t/plain", None), ("text/plain,text/html", None)])
def test_media_type(value: str | None, expected: str | None) -> None:
    assert media_type(value) == expected


def test_guess_type_prefers_a_valid_declared_type_to_the_name() -> None:
    assert guess_type("a.txt", "image/png") == "image/png"
    assert guess_type("a.txt", "text/pl\x01ain") == "text/plain"
    assert guess_type("a.csv", "application/octet-stream") == "text/csv"
    assert guess_type("no-extension", "text/plain\nX: y") == "application/octet-stream"
    assert guess_type("data.csv") == "text/csv"
