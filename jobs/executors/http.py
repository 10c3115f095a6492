"""The http executor: one HTTP request per attempt with httpx.

Spec: {"method": "POST", "url": "https://host/path/{{ id }}", "headers": {...}, "body": "...",
"expected_status": [200, 201]}. Parameters are URL-encoded where they land in the URL and
cannot reach its scheme or host (checked when the task is saved). The response's status,
headers and body (up to a cap) become the execution's result and are written to its log.
"""

from __future__ import annotations

from urllib.parse import quote

import httpx
from django.conf import settings

from jobs.executors import ExecutionContext, Outcome, error_truncate
from jobs.executors.command import param_text
from runs.models import ExecutionStatus
from runs.secret_box import mask_secrets
from runs.specs import PLACEHOLDER_RE

BODY_KEEP = 64 * 1024


def _render(template: str, params: dict, *, url: bool = False) -> str:
    def value(match) -> str:
        text = param_text(params.get(match.group(1), ""))
        if not url:
            return text
        # Dots too: a value of ".." must not climb out of the path the task fixed.
        return quote(text, safe="").replace(".", "%2E")

    return PLACEHOLDER_RE.sub(value, template)


def http_execute(ctx: ExecutionContext) -> Outcome:
    spec = ctx.snapshot["spec"]
    timeout = int(ctx.snapshot.get("timeout_seconds") or settings.SWITCHYARD_DEFAULT_TIMEOUT)
    method = spec.get("method", "GET").upper()
    url = _render(spec["url"], ctx.params, url=True)
    headers = {k: _render(v, ctx.params) for k, v in (spec.get("headers") or {}).items()}
    body = _render(spec["body"], ctx.params) if spec.get("body") is not None else None
    expected = spec.get("expected_status") or [200, 201, 202, 204]
    ctx.log.system(f"{method} {mask_secrets(url, ctx.secret_values)}")
    try:
        with httpx.Client(timeout=timeout, follow_redirects=False) as client:
            response = client.request(method, url, headers=headers, content=body)
    except httpx.TimeoutException:
        ctx.log.system(f"timed out after {timeout} s")
        return Outcome(status=ExecutionStatus.TIMED_OUT, outcome="timed_out",
                       error=f"No response within {timeout} s.")
    except httpx.HTTPError as exc:
        message = f"Request failed: {type(exc).__name__}: {exc}"
        ctx.log.system(message)
        return Outcome(status=ExecutionStatus.FAILED, outcome="unreachable",
                       error=error_truncate(message))
    text = response.text[:BODY_KEEP]
    for line in text.splitlines():
        ctx.log.add("stdout", line)
    ctx.log.flush()
    result = {
        "status_code": response.status_code,
        "headers": dict(response.headers),
        "body": text,
        "body_truncated": len(response.text) > BODY_KEEP,
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
