"""Redacting secrets: URL passwords and ``password=...`` pairs never reach output or a store.

A password may hold any character (``/ # ? @``, a space), raw or percent-encoded, and a raw
``/``, ``#`` or ``?`` defeats :mod:`urllib.parse`, which ends the authority there. So a URL's
userinfo is found by parsing from ``scheme://``: it ends at the first ``@`` that is followed
by a host (host characters, then the end or ``/ ? #``), not at a pattern's guess.
"""

from __future__ import annotations

import json
import re
from collections.abc import Iterator, Mapping
from typing import Any

__all__ = ["as_text", "redact_url", "scrub", "without_userinfo"]

MASK = "***"
_SCHEME = re.compile(r"\b[A-Za-z][A-Za-z0-9+.\-]*://")
# host[:port], an IPv6 literal, or a list of hosts (libpq's host1:5432,host2:5432)
_HOST = re.compile(r"[\w.\-%~\[\]:,]*(?=[/?#\s'\"<>)\]}]|$)")
_PORT = re.compile(r":\d+$")
_MAX_SPACES = 3  # in a password: more, and the text after a URL is taken for its userinfo
_KEYWORD_PASSWORD = re.compile(
    r"""(?ix)\b(password|passwd|pwd)=
    ( '(?:[^'\\]|\\.)*'      # libpq's quoted value: may hold spaces
    | "(?:[^"\\]|\\.)*"
    | (?!\*\*\*)[^\s&;,'"]+ )"""
)


def _userinfo_end(text: str, start: int) -> int | None:
    """Index of the ``@`` that ends the userinfo of a URL whose authority starts at ``start``.

    Candidates are the ``@`` followed by a host, on the same line and before any other URL;
    a host with a port, or followed by ``/ ? #``, a quote or the end of the line, is surer
    than one followed by a space (the end of a URL in a sentence, or a space in a password,
    or a ``:`` in one). Among the
    surer, then the others: the last before any whitespace (a password may hold ``@``), else
    the first with at most a few spaces before it (a password may hold a space).
    """
    end = text.find("\n", start)
    end = len(text) if end == -1 else end
    following = text.find("://", start, end)
    end = end if following == -1 else following
    sure: list[int] = []
    other: list[int] = []
    for at in (i for i in range(start, end) if text[i] == "@"):
        host = _HOST.match(text, at + 1)
        if host is not None:
            ends = host.end() >= len(text) or text[host.end()] in "/?#\n'\""
            has_port = _PORT.search(host[0].rstrip(".:,;")) is not None
            (sure if ends or has_port else other).append(at)
    for found in (sure, other):
        spaces = [sum(c.isspace() for c in text[start:at]) for at in found]
        plain = [at for at, n in zip(found, spaces, strict=True) if n == 0]
        if plain:
            return plain[-1]
        near = [at for at, n in zip(found, spaces, strict=True) if n <= _MAX_SPACES]
        if near:
            return near[0]
    return None


def _passwords(text: str) -> Iterator[tuple[int, int, str]]:
    """``(start, end, password)`` of every URL password in ``text``."""
    for match in _SCHEME.finditer(text):
        at = _userinfo_end(text, match.end())
        if at is None:
            continue
        user, colon, password = text[match.end() : at].partition(":")
        if colon and password and password != MASK:
            yield match.end() + len(user) + 1, at, password


def _redacted(text: str) -> str:
    out, pos = [], 0
    for start, end, _password in _passwords(text):
        if start >= pos:  # not inside a userinfo already redacted
            out.append(text[pos:start] + MASK)
            pos = end
    return "".join(out) + text[pos:]


def redact_url(url: str) -> str:
    """Replace the password of a URL (or of every URL in a text), in its userinfo or a
    ``password=`` pair, with ``***``.

    >>> redact_url("postgresql+psycopg2://optuna:hunter2@db:5432/studies")
    'postgresql+psycopg2://optuna:***@db:5432/studies'
    >>> redact_url("postgresql://postgres:sec/r#e?t @x@127.0.0.1/db")
    'postgresql://postgres:***@127.0.0.1/db'
    """
    return _KEYWORD_PASSWORD.sub(lambda m: f"{m[1]}={MASK}", _redacted(url))


def without_userinfo(url: str) -> str:
    """``url`` with its ``user:password@`` removed, ready for :func:`urllib.parse.urlsplit`.

    >>> without_userinfo("https://me:a/b#c?d@mlflow.example:5000/x")
    'https://mlflow.example:5000/x'
    """
    match = _SCHEME.match(url)
    at = _userinfo_end(url, match.end()) if match else None
    return url if match is None or at is None else url[: match.end()] + url[at + 1 :]


def scrub(value: str) -> str:
    """Redact every URL password and every ``password=...`` pair anywhere in ``value``."""
    return redact_url(value)


def as_text(value: Any) -> str:
    if isinstance(value, Mapping | list | tuple):
        return scrub(json.dumps(value, sort_keys=True, default=str))
    return scrub(str(value))  # str, not repr: numpy scalars print as plain numbers
