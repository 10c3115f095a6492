"""Error views: the API keeps its JSON error shape even for URLs no route matches."""

from __future__ import annotations

from django.http import HttpRequest, HttpResponse, JsonResponse
from django.shortcuts import render


def not_found(request: HttpRequest, exception: Exception | None = None) -> HttpResponse:
    if request.path.startswith("/api/"):
        return JsonResponse({"error": {"code": "not_found", "message": "Not found.",
                                       "fields": {}}}, status=404)
    return render(request, "404.html", status=404)


# --- operations: probes and metrics -------------------------------------------------------


def healthz(request: HttpRequest) -> HttpResponse:
    """Liveness: the process answers. Touches nothing else, so a database outage does not get
    healthy web processes restarted."""
    return JsonResponse({"status": "ok"})


def readyz(request: HttpRequest) -> HttpResponse:
    """Readiness: the database answers and every migration is applied. 503 otherwise, with
    what is wrong, so a load balancer stops sending traffic until it is fixed."""
    from django.db import DatabaseError, connection
    from django.db.migrations.executor import MigrationExecutor

    checks: dict[str, str] = {}
    try:
        with connection.cursor() as cursor:
            cursor.execute("SELECT 1")
        checks["database"] = "ok"
        executor = MigrationExecutor(connection)
        plan = executor.migration_plan(executor.loader.graph.leaf_nodes())
        checks["migrations"] = "ok" if not plan else (
            f"{len(plan)} unapplied, e.g. {plan[0][0].app_label}.{plan[0][0].name}; "
            "run manage.py migrate")
    except DatabaseError as exc:
        checks["database"] = f"unreachable: {type(exc).__name__}"
        connection.close()  # the next probe reconnects
    ready = all(value == "ok" for value in checks.values()) and "migrations" in checks
    return JsonResponse({"status": "ok" if ready else "unavailable", "checks": checks},
                        status=200 if ready else 503)


def metrics(request: HttpRequest) -> HttpResponse:
    """Prometheus metrics (jobs.metrics), for `Authorization: Bearer <SWITCHYARD_METRICS_TOKEN>`.
    Off (404) while no token is set: the figures describe every project."""
    import hmac

    from django.conf import settings

    token = settings.SWITCHYARD_METRICS_TOKEN
    if not token:
        return JsonResponse({"error": {"code": "not_found", "message": "Metrics are off; set "
                                       "SWITCHYARD_METRICS_TOKEN to turn them on.",
                                       "fields": {}}}, status=404)
    sent = request.headers.get("Authorization", "")
    if not hmac.compare_digest(sent.encode(), f"Bearer {token}".encode()):
        response = JsonResponse({"error": {"code": "unauthorized", "message": "Send "
                                           "Authorization: Bearer <SWITCHYARD_METRICS_TOKEN>.",
                                           "fields": {}}}, status=401)
        response["WWW-Authenticate"] = 'Bearer realm="metrics"'
        return response
    from prometheus_client import CONTENT_TYPE_LATEST

    from jobs.metrics import metrics_text

    return HttpResponse(metrics_text(), content_type=CONTENT_TYPE_LATEST)
