"""A small multipart/form-data parser (RFC 7578) for /v1/files, so the server needs no extra dependency.

In: the whole request body (already capped by the body size limit) and its Content-Type header.
Out: the form fields by name, each a `FormPart` (file parts carry `filename`). ValueError when malformed.

    --BOUNDARY\r\n
    Content-Disposition: form-data; name="file"; filename="cat.png"\r\n
    Content-Type: image/png\r\n
    \r\n
    <bytes>\r\n
    --BOUNDARY--\r\n
"""

from __future__ import annotations

import re
from dataclasses import dataclass

_PARAM = re.compile(r';\s*([A-Za-z0-9_*.-]+)\s*=\s*("(?:[^"\\]|\\.)*"|[^;]*)')


@dataclass
class FormPart:
    name: str
    data: bytes
    filename: str | None = None  # set for file fields
    content_type: str | None = None

    def text(self) -> str:
        return self.data.decode("utf-8", errors="replace")


def _header_params(value: str) -> dict[str, str]:
    params = {}
    for key, raw in _PARAM.findall(value):
        raw = raw.strip()
        if raw.startswith('"') and raw.endswith('"'):
            raw = re.sub(r"\\(.)", r"\1", raw[1:-1])
        params[key.lower()] = raw
    return params


def boundary_of(content_type: str) -> bytes:
    if not content_type.lower().startswith("multipart/form-data"):
        raise ValueError("the request must be multipart/form-data (a 'file' field and a 'purpose' field)")
    boundary = _header_params(content_type).get("boundary")
    if not boundary or len(boundary) > 200:
        raise ValueError("the multipart Content-Type has no valid boundary")
    return boundary.encode("latin-1")


def parse_multipart(body: bytes, content_type: str) -> dict[str, FormPart]:
    delimiter = b"--" + boundary_of(content_type)
    start = body.find(delimiter)
    if start == -1:
        raise ValueError("malformed multipart body: the boundary never occurs")
    parts: dict[str, FormPart] = {}
    position = start + len(delimiter)
    while True:
        if body.startswith(b"--", position):  # the closing delimiter
            return parts
        if not body.startswith(b"\r\n", position):
            raise ValueError("malformed multipart body: a boundary line is not followed by CRLF")
        header_end = body.find(b"\r\n\r\n", position + 2)
        if header_end == -1:
            raise ValueError("malformed multipart body: a part has no header end")
        headers = {}
        for line in body[position + 2 : header_end].decode("utf-8", errors="replace").split("\r\n"):
            key, colon, value = line.partition(":")
            if colon:
                headers[key.strip().lower()] = value.strip()
        next_delimiter = body.find(b"\r\n" + delimiter, header_end + 4)
        if next_delimiter == -1:
            raise ValueError("malformed multipart body: missing closing boundary")
        disposition = headers.get("content-disposition", "")
        params = _header_params(";" + disposition.partition(";")[2])
        if not disposition.lower().startswith("form-data") or "name" not in params:
            raise ValueError(
                "malformed multipart body: a part lacks 'Content-Disposition: form-data; name=...'"
            )
        filename = params.get("filename")
        if filename is not None:  # browsers and httpx escape these three (WHATWG form encoding)
            filename = filename.replace("%22", '"').replace("%0D", "\r").replace("%0A", "\n")
        parts[params["name"]] = FormPart(
            name=params["name"],
            data=body[header_end + 4 : next_delimiter],
            filename=filename,
            content_type=headers.get("content-type"),
        )
        position = next_delimiter + 2 + len(delimiter)
