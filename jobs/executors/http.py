"""The http executor: one HTTP request per attempt with httpx.

Spec: {"method": "POST", "url": "https://host/path/{{ id }}", "headers": {...}, "body": "...",
"expected_status": [200, 201]}. Parameters are URL-encoded where they land in the URL and
cannot reach its scheme or host (checked when the task is saved). The response's status,
headers and body (up to a cap) become the execution's result and are written to its log.
"""

from __future__ import annotations

import time
from urllib.parse import quote

import httpx
from django.conf import settings

from jobs.executors import ExecutionContext, Outcome, error_truncate
from jobs.executors.command import param_text
from runs.models import ExecutionStatus
from runs.secret_box import mask_secrets
from runs.specs import PLACEHOLDER_RE

BODY_KEEP = 64 * 1024  # bytes of the body kept; the rest is counted and discarded


def _render(template: str, params: dict, *, url: bool = False) -> str:
    def value(match) -> str:
        text = param_text(params.get(match.group(1), ""))
        if not url:
            return text
        # Dots too: a value of ".." must not climb out of the path the task fixed.
        return quote(text, safe="").replace(".", "%2E")

    return PLACEHOLDER_RE.sub(value, template)


def _response_name(content_type: str) -> str:
    """The artifact name of a response body, by its media type."""
    media = content_type.split(";")[0].strip().lower()
    if media == "application/json" or media.endswith("+json"):
        return "response.json"
    if media in ("text/html", "application/xhtml+xml"):
        return "response.html"
    if media in ("text/csv",):
        return "response.csv"
    if media.startswith("text/") or media in ("application/xml",) or media.endswith("+xml"):
        return "response.txt"
    return "response.bin"


def http_execute(ctx: ExecutionContext) -> Outcome:
    spec = ctx.snapshot["spec"]
    timeout = int(ctx.snapshot.get("timeout_seconds") or settings.SWITCHYARD_DEFAULT_TIMEOUT)
    method = spec.get("method", "GET").upper()
    url = _render(spec["url"], ctx.params, url=True)
    headers = {k: _render(v, ctx.params) for k, v in (spec.get("headers") or {}).items()}
    body = _render(spec["body"], ctx.params) if spec.get("body") is not None else None
    expected = spec.get("expected_status") or [200, 201, 202, 204]
    ctx.log.system(f"{method} {mask_secrets(url, ctx.secret_values)}")
    deadline = time.monotonic() + timeout
    chunks: list[bytes] = []
    size = 0
    # The whole body is kept as an artifact (response.<ext>), up to the per-file artifact cap;
    # the result holds only its first BODY_KEEP bytes.
    keep_max = settings.SWITCHYARD_ARTIFACT_MAX_FILE_MB * 1024 * 1024
    kept = bytearray()
    body_path = None
    try:
        with httpx.Client(timeout=min(timeout, 30), follow_redirects=False) as client, \
                client.stream(method, url, headers=headers, content=body) as response:
            body_path = ctx.workdir / _response_name(response.headers.get("content-type", ""))
            # A server that trickles bytes would never trip httpx's per-read timeout: the
            # whole exchange gets one deadline, and a stop request ends it too.
            for chunk in response.iter_bytes():
                if time.monotonic() > deadline:
                    raise httpx.ReadTimeout("total deadline passed")
                if ctx.stop.is_set():
                    ctx.log.system(f"stopped ({ctx.stop_reason})")
                    return Outcome(status=ExecutionStatus.CANCELLED, outcome="stopped",
                                   error=ctx.stop_reason or "stopped")
                if size < BODY_KEEP:
                    chunks.append(chunk[: BODY_KEEP - size])
                if size < keep_max:
                    kept += chunk[: keep_max - size]
                size += len(chunk)
    except httpx.TimeoutException:
        ctx.log.system(f"timed out after {timeout} s")
        return Outcome(status=ExecutionStatus.TIMED_OUT, outcome="timed_out",
                       error=f"No complete response within {timeout} s.")
    except httpx.HTTPError as exc:
        message = f"Request failed: {type(exc).__name__}: {exc}"
        ctx.log.system(message)
        return Outcome(status=ExecutionStatus.FAILED, outcome="unreachable",
                       error=error_truncate(message))
    finally:
        if body_path is not None and kept:
            # Masked like the result and the log: an API that echoes a credential must not
            # hand it to every viewer of the run through the kept file.
            body = bytes(kept)
            for secret in ctx.secret_values:
                body = body.replace(secret.encode(), b"********")
            body_path.write_bytes(body)
    text = b"".join(chunks).decode(response.encoding or "utf-8", errors="replace")
    ctx.log.add_lines("stdout", text.splitlines())
    ctx.log.flush()
    result = {
        "status_code": response.status_code,
        "headers": dict(response.headers),
        "body": text,
        "body_truncated": size > BODY_KEEP,
        "body_bytes": size,
        "elapsed_ms": round(response.elapsed.total_seconds() * 1000, 1),
    }
    if response.status_code in expected:
        return Outcome(status=ExecutionStatus.SUCCEEDED, outcome="success", result=result)
    return Outcome(
        status=ExecutionStatus.FAILED,
        outcome="failure",
        error=f"HTTP {response.status_code}; expected {', '.join(map(str, expected))}",
        result=result,
    )
