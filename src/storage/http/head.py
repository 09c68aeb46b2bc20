"""Sans-I/O parsing of an HTTP/1.x request head (request line + header fields).

The parser is ``_fastpath.httphead`` (or its pure-Python twin ``storage.pure.httphead``
with STORAGE_NODE_PURE=1); this module re-exports the selected one so that the server,
and every ``except HttpError``, use one implementation and one HttpError class.
Strict on purpose: each rejection is an ``HttpError`` with a status and a one-line
reason. The caller finds the end of the head (``find_head_end``) and enforces the size
limit (431).
"""
from storage.fast import load

_impl = load("httphead")

TOKEN = _impl.TOKEN
HttpError = _impl.HttpError
Request = _impl.Request
find_head_end = _impl.find_head_end
parse_head = _impl.parse_head

__all__ = ["TOKEN", "HttpError", "Request", "find_head_end", "parse_head"]
