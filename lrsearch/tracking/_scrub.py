"""Redacting secrets: URL passwords and ``password=...`` pairs never reach a tracking store."""

from __future__ import annotations

import json
import re
from collections.abc import Mapping
from typing import Any

__all__ = ["as_text", "redact_url", "scrub"]

_URL = re.compile(r"\b(?P<scheme>[A-Za-z][A-Za-z0-9+.\-]*://)(?P<authority>[^\s/?#]*)")
_KEYWORD_PASSWORD = re.compile(r"(?i)\b(password|passwd|pwd)=(?!\*\*\*)[^\s&;,'\"]+")


def _redact_authority(match: re.Match[str]) -> str:
    userinfo, at, host = match["authority"].rpartition("@")
    user, colon, password = userinfo.partition(":")
    if not (at and colon and password) or password == "***":
        return match[0]
    return f"{match['scheme']}{user}:***@{host}"


def redact_url(url: str) -> str:
    """Replace the password of a URL with ``***``; a URL without one comes back unchanged.

    >>> redact_url("postgresql+psycopg2://optuna:hunter2@db:5432/studies")
    'postgresql+psycopg2://optuna:***@db:5432/studies'
    """
    return _URL.sub(_redact_authority, url)


def scrub(value: str) -> str:
    """Redact every URL password and every ``password=...`` pair anywhere in ``value``."""
    return _KEYWORD_PASSWORD.sub(r"\1=***", redact_url(value))


def as_text(value: Any) -> str:
    if isinstance(value, Mapping | list | tuple):
        return scrub(json.dumps(value, sort_keys=True, default=str))
    return scrub(str(value))  # str, not repr: numpy scalars print as plain numbers
