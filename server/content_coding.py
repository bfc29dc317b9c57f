"""Request bodies sent with `Content-Encoding` (gzip, deflate): decoded within the body limit, or refused by name.

Starlette hands a compressed body to the JSON parser as is, which answered a generic 400 "error parsing the body".
RFC 9110 (8.4, 15.5.16) gives a server two honest answers: decode the coding, or 415 naming the codings it accepts.
The limit applies to the decoded size too, so a small compressed body cannot expand past `max_body_bytes`.
"""

from __future__ import annotations

import zlib

ACCEPTED = ("gzip", "deflate", "identity")
ACCEPT_ENCODING = ", ".join(ACCEPTED)
_WBITS = {"gzip": 16 + zlib.MAX_WBITS, "x-gzip": 16 + zlib.MAX_WBITS, "deflate": zlib.MAX_WBITS}
_CHUNK = 1 << 16


class UnsupportedCoding(Exception):
    """A `Content-Encoding` this server does not decode (415)."""


class UndecodableBody(Exception):
    """A body that is not what its `Content-Encoding` says (400)."""


class DecodedTooLarge(Exception):
    """A body whose decoded size passes the limit (413)."""

    def __init__(self, size: int, limit: int) -> None:
        super().__init__(f"request body decodes to {size}+ bytes")
        self.size = size
        self.limit = limit


def applied_codings(header: bytes) -> list[str]:
    """The codings of a `Content-Encoding` value in the order they were applied, `identity` left out; refuses
    what this server cannot decode, naming it."""
    named = [c.strip().lower() for c in header.decode("latin-1").split(",") if c.strip()]
    unknown = [c for c in named if c not in _WBITS and c != "identity"]
    if unknown:
        raise UnsupportedCoding(
            f"Content-Encoding {', '.join(repr(c) for c in unknown)} is not supported: send the body as "
            f"{' or '.join(ACCEPTED)}"
        )
    return [c for c in named if c != "identity"]


def decode_body(body: bytes, applied: list[str], max_bytes: int) -> bytes:
    """`body` with `applied` codings undone, last applied first; at most `max_bytes` decoded bytes at each step."""
    for coding in reversed(applied):
        body = _inflate(body, coding, max_bytes)
    return body


def _inflate(body: bytes, coding: str, max_bytes: int) -> bytes:
    # "deflate" is the zlib format (RFC 9110 8.4.1.2); some clients send raw deflate, read as such if zlib fails
    attempts = [_WBITS[coding]] + ([-zlib.MAX_WBITS] if coding == "deflate" else [])
    for i, wbits in enumerate(attempts):
        try:
            return _inflate_with(body, wbits, max_bytes)
        except zlib.error as exc:
            if i == len(attempts) - 1:
                raise UndecodableBody(f"request body is not valid {coding} data ({exc})") from None
    raise AssertionError("unreachable")


def _inflate_with(body: bytes, wbits: int, max_bytes: int) -> bytes:
    """Every member of `body` (gzip allows several, one after the other), within `max_bytes` decoded bytes."""
    parts: list[bytes] = []
    size = 0
    data = body
    while True:
        inflater = zlib.decompressobj(wbits)
        while not inflater.eof:
            part = inflater.decompress(data, _CHUNK)  # with no data left, what zlib still holds
            if not part and not data:
                raise zlib.error("the data ends before the end of the compressed stream")
            size += len(part)
            if size > max_bytes:
                raise DecodedTooLarge(size, max_bytes)
            parts.append(part)
            data = inflater.unconsumed_tail
        data = inflater.unused_data
        if not data.strip(b"\0"):  # gzip tools tolerate zero padding after the last member
            return b"".join(parts)
        if wbits != _WBITS["gzip"]:
            raise zlib.error("bytes follow the end of the compressed stream")
