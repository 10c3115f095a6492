"""Error views: the API keeps its JSON error shape even for URLs no route matches."""

from __future__ import annotations

from django.http import HttpRequest, HttpResponse, JsonResponse
from django.shortcuts import render


def not_found(request: HttpRequest, exception: Exception | None = None) -> HttpResponse:
    if request.path.startswith("/api/"):
        return JsonResponse({"error": {"code": "not_found", "message": "Not found.",
                                       "fields": {}}}, status=404)
    return render(request, "404.html", status=404)
