"""Helpers for plughost plugins written in Python, over the bindings componentize-py generates
for plughost's `plugin` world (`wit_world`): the same helpers the Rust SDK offers."""

from __future__ import annotations

import json as _json
from typing import Any, Mapping, Optional

from componentize_py_types import Err
from wit_world.imports import host, types

__all__ = ["config", "header", "json", "log", "next", "respond", "text"]

_LEVELS = {
    "trace": host.Level.TRACE,
    "debug": host.Level.DEBUG,
    "info": host.Level.INFO,
    "warn": host.Level.WARN,
    "error": host.Level.ERROR,
}


def config(text: str) -> dict[str, Any]:
    """The plugin's config table (the JSON `plugin_init` gets) as a dict; a config that is not
    a JSON object keeps the plugin from loading, with the reason."""
    try:
        value = _json.loads(text)
    except ValueError as e:
        raise Err(f"config is not JSON: {e}")
    if not isinstance(value, dict):
        raise Err("config is not a JSON object")
    return value


def header(req: types.Request, name: str) -> Optional[str]:
    """The first value of header `name` (case-insensitive), or None."""
    name = name.lower()
    for h in req.headers:
        if h.name.lower() == name:
            return h.value
    return None


def log(level: str, message: str) -> None:
    """A line in plughost's log, tagged with the plugin's name (`trace` … `error`)."""
    host.log(_LEVELS[level], message)


def _headers(pairs: Optional[Mapping[str, str]]) -> list[types.Header]:
    return [types.Header(k.lower(), v) for k, v in (pairs or {}).items()]


def respond(status: int, body: bytes, headers: Optional[Mapping[str, str]] = None) -> types.Action:
    """Answers the request itself."""
    return types.Action_Respond(types.Response(status, _headers(headers), body))


def text(status: int, body: str, headers: Optional[Mapping[str, str]] = None) -> types.Action:
    """A `text/plain` answer."""
    all_headers = {"content-type": "text/plain; charset=utf-8", **(headers or {})}
    return respond(status, body.encode(), all_headers)


def json(status: int, value: Any, headers: Optional[Mapping[str, str]] = None) -> types.Action:
    """An `application/json` answer."""
    all_headers = {"content-type": "application/json", **(headers or {})}
    return respond(status, _json.dumps(value).encode(), all_headers)


def next(
    set_headers: Optional[Mapping[str, str]] = None,
    remove_headers: Optional[list[str]] = None,
    response_headers: Optional[Mapping[str, str]] = None,
) -> types.Action:
    """Lets the request go on, with header edits: request headers to set or remove, and
    headers to add to the response finally sent."""
    return types.Action_Continue(
        types.Edits(
            _headers(set_headers),
            [n.lower() for n in remove_headers or []],
            _headers(response_headers),
        )
    )
