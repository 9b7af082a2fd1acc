"""/v1/files: upload (multipart), list, retrieve, download, delete.

In: `multipart/form-data` with a `file` field and a `purpose` field (any string; OpenAI's names are
"user_data", "vision", "assistants", ...). The body is capped by the upload limit before it is read;
parsing and disk writes run in a worker thread. Out: OpenAI file objects; an uploaded file's id works in
chat messages (`{"type": "file", "file": {"file_id": ...}}`).
"""

from __future__ import annotations

import asyncio
import mimetypes

from fastapi import APIRouter, Request
from fastapi.responses import JSONResponse, Response
from omniserve.api.errors import APIError, bad_request, not_found, too_large
from omniserve.api.file_store import StorageFull, StoredFile
from omniserve.api.media import sniff_mime
from omniserve.api.multipart import parse_multipart
from omniserve.api.server_state import get_state

router = APIRouter()


def _lookup(request: Request, file_id: str) -> StoredFile:
    record = get_state(request).files.get(file_id)
    if record is None:
        raise not_found(
            f"no file with id {file_id!r} (unknown, deleted or expired)", "file_id", "file_not_found"
        )
    return record


@router.post("/v1/files")
async def upload_file(request: Request) -> JSONResponse:
    state = get_state(request)
    body = await request.body()
    try:
        form = await asyncio.to_thread(parse_multipart, body, request.headers.get("content-type", ""))
    except ValueError as error:
        raise bad_request(str(error), "file") from error
    upload = form.get("file")
    if upload is None or upload.filename is None:
        raise bad_request("missing the 'file' field (a file part of the multipart form)", "file")
    if not upload.data:
        raise bad_request("the uploaded file is empty", "file")
    if len(upload.data) > state.config.max_upload_bytes:
        raise too_large(
            f"the file has {len(upload.data)} bytes; the upload limit is {state.config.max_upload_bytes}",
            "file",
        )
    purpose = form["purpose"].text() if "purpose" in form else "user_data"
    mime = sniff_mime(upload.data) or (upload.content_type or "").split(";")[0].strip().lower()
    if not mime or mime == "application/octet-stream":
        mime = mimetypes.guess_type(upload.filename)[0] or "application/octet-stream"
    filename = upload.filename.replace("\\", "/").rsplit("/", 1)[-1] or "upload"
    try:
        record = await asyncio.to_thread(state.files.put, upload.data, filename, purpose, mime)
    except StorageFull as error:
        raise APIError(507, str(error), code="storage_full") from error
    return JSONResponse(record.to_openai())


@router.get("/v1/files")
async def list_files(request: Request) -> JSONResponse:
    records = get_state(request).files.list()
    return JSONResponse(
        {"object": "list", "data": [record.to_openai() for record in records], "has_more": False}
    )


@router.get("/v1/files/{file_id}")
async def retrieve_file(file_id: str, request: Request) -> JSONResponse:
    return JSONResponse(_lookup(request, file_id).to_openai())


@router.get("/v1/files/{file_id}/content")
async def file_content(file_id: str, request: Request) -> Response:
    record = _lookup(request, file_id)
    data = await asyncio.to_thread(get_state(request).files.read, record)
    safe_name = "".join(c if c.isprintable() and c not in '"\\' else "_" for c in record.filename)
    return Response(
        data,
        media_type=record.mime_type,
        headers={"Content-Disposition": f'attachment; filename="{safe_name}"'},
    )


@router.delete("/v1/files/{file_id}")
async def delete_file(file_id: str, request: Request) -> JSONResponse:
    _lookup(request, file_id)
    get_state(request).files.delete(file_id)
    return JSONResponse({"id": file_id, "object": "file", "deleted": True})
