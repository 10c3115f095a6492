"""HTTP responses that send stored bytes, shared by the pages and the API.

Everything we send was written by a task's process, so it is untrusted: only raster images
are ever shown inline (never SVG or HTML, which can carry script), every response says
`nosniff` and carries a sandboxing Content-Security-Policy, and the name in
Content-Disposition is the file's base name, quoted by Django.
"""

from __future__ import annotations

import contextlib
from collections.abc import AsyncIterator, Iterator

from asgiref.sync import sync_to_async
from django.core.handlers.asgi import ASGIRequest
from django.http import (
    HttpRequest,
    HttpResponse,
    HttpResponseNotModified,
    StreamingHttpResponse,
)
from django.utils.http import content_disposition_header

from artifacts.models import INLINE_IMAGE_TYPES, Artifact
from artifacts.storage import artifact_storage
from runs.errors import NotFound

CHUNK = 256 * 1024


def _chunks(handle) -> Iterator[bytes]:
    try:
        while block := handle.read(CHUNK):
            yield block
    finally:
        handle.close()


async def _achunks(handle) -> AsyncIterator[bytes]:
    # Under ASGI a synchronous iterator would be read whole into memory before sending (Django
    # warns); reading block by block in a thread keeps a 100 MB artifact at 256 KiB in memory.
    read = sync_to_async(handle.read, thread_sensitive=False)
    try:
        while block := await read(CHUNK):
            yield block
    finally:
        await sync_to_async(handle.close, thread_sensitive=False)()


def _hardened(response: HttpResponse, etag: str) -> HttpResponse:
    response["X-Content-Type-Options"] = "nosniff"
    response["Content-Security-Policy"] = "default-src 'none'; img-src 'self'; sandbox"
    response["Cache-Control"] = "private, max-age=86400"
    response["ETag"] = f'"{etag}"'
    return response


def stored_file_response(request: HttpRequest, *, key: str, etag: str, filename: str,
                         content_type: str, inline: bool) -> HttpResponse:
    """Stream a stored file; a matching If-None-Match gets 304 without reading storage."""
    if request.headers.get("If-None-Match", "").strip() == f'"{etag}"':
        return _hardened(HttpResponseNotModified(), etag)
    try:
        handle = artifact_storage().open(key, "rb")
    except (FileNotFoundError, OSError):
        raise NotFound("The file is missing from artifact storage.") from None
    show_inline = inline and content_type in INLINE_IMAGE_TYPES
    body = _achunks(handle) if isinstance(request, ASGIRequest) else _chunks(handle)
    response = StreamingHttpResponse(
        body,
        content_type=content_type if show_inline or content_type.startswith(
            ("text/", "application/json", "image/")) else "application/octet-stream",
    )
    response["Content-Disposition"] = content_disposition_header(not show_inline, filename)
    with contextlib.suppress(OSError, NotImplementedError):
        response["Content-Length"] = str(artifact_storage().size(key))
    return _hardened(response, etag)


def artifact_download(request: HttpRequest, artifact: Artifact, *, inline: bool = False
                      ) -> HttpResponse:
    return stored_file_response(request, key=artifact.storage_key, etag=artifact.sha256,
                                filename=artifact.basename, content_type=artifact.content_type,
                                inline=inline)


def picture_response(request: HttpRequest, artifact: Artifact, picture: str, key: str
                     ) -> HttpResponse:
    """A comparison picture (diff, heatmap: PNG we made) or the baseline image, inline."""
    comparison = artifact.comparison
    if picture == "baseline":
        baseline = comparison.baseline
        return stored_file_response(request, key=key, etag=baseline.sha256,
                                    filename=baseline.basename,
                                    content_type=baseline.content_type, inline=True)
    etag = f"{artifact.sha256[:32]}-{comparison.pk}-{picture}"
    return stored_file_response(request, key=key, etag=etag,
                                filename=f"{artifact.basename}.{picture}.png",
                                content_type="image/png", inline=True)
