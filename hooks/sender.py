"""One HTTP POST of a signed delivery, pinned to the addresses `hooks.targets` checked.

No redirect is followed (a 3xx counts as a failure and says where it pointed: the endpoint's URL
should be the final one, and a redirect could lead to an address that was never checked). The
environment's proxy settings are ignored for the same reason. At most EXCERPT_BYTES of the
response body are read; the rest is never downloaded.
"""

from __future__ import annotations

import time

import httpx

from hooks.services import EXCERPT_MAX, SendResult
from hooks.targets import Target

EXCERPT_BYTES = EXCERPT_MAX
USER_AGENT = "Switchyard-Webhooks/1.0"
# Connection refused on one address: try the next one the host resolved to, up to this many.
MAX_ADDRESSES = 3


def _elapsed_ms(start: float) -> int:
    return int((time.monotonic() - start) * 1000)


def delivery_post(*, target: Target, body: bytes, headers: dict[str, str],
                  timeout: float) -> SendResult:
    """POST `body` to the target; 2xx is success. Never raises for network trouble."""
    start = time.monotonic()
    # One deadline for the whole exchange: httpx's timeout is per read, and a server that
    # trickles bytes would never trip it.
    deadline = start + timeout
    request_headers = {
        **headers,
        "Content-Type": "application/json",
        "User-Agent": USER_AGENT,
        "Host": target.host_header,
    }
    # TLS must check the certificate against the name, not the pinned address.
    extensions = {"sni_hostname": target.host} if target.scheme == "https" else {}
    last_error = ""
    for address in target.addresses[:MAX_ADDRESSES]:
        try:
            with httpx.Client(timeout=timeout, follow_redirects=False, trust_env=False) as client, \
                    client.stream("POST", target.url_for(address), content=body,
                                  headers=request_headers, extensions=extensions) as response:
                chunks: list[bytes] = []
                size = 0
                for chunk in response.iter_bytes():
                    if time.monotonic() > deadline:
                        raise httpx.ReadTimeout("total deadline passed")
                    chunks.append(chunk[: EXCERPT_BYTES - size])
                    size += len(chunks[-1])
                    if size >= EXCERPT_BYTES:
                        break  # the excerpt is all we keep; leave the rest unread
                status = response.status_code
                location = response.headers.get("location", "")
        except httpx.ConnectError as exc:
            last_error = f"could not connect to {address}: {exc}"
            continue
        except httpx.TimeoutException:
            return SendResult(ok=False, duration_ms=_elapsed_ms(start),
                              error=f"No complete response within {timeout:g} s.")
        except httpx.HTTPError as exc:
            return SendResult(ok=False, duration_ms=_elapsed_ms(start),
                              error=f"Request failed: {type(exc).__name__}: {exc}")
        excerpt = b"".join(chunks).decode("utf-8", errors="replace")
        duration = _elapsed_ms(start)
        if 200 <= status < 300:
            return SendResult(ok=True, status_code=status, duration_ms=duration, excerpt=excerpt)
        if 300 <= status < 400:
            error = (f"HTTP {status}: redirect to {location[:300]!r} not followed; point the "
                     "webhook at the final URL.")
        else:
            error = f"HTTP {status}: the receiver did not answer with a 2xx status."
        return SendResult(ok=False, status_code=status, duration_ms=duration, excerpt=excerpt,
                          error=error)
    return SendResult(ok=False, duration_ms=_elapsed_ms(start),
                      error=f"Connection failed: {last_error or 'no address to connect to'}")
