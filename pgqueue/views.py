"""Views a project mounts in its urls.py (include("pgqueue.urls")): Prometheus metrics and a health probe."""

from __future__ import annotations

from django.conf import settings
from django.db import DatabaseError
from django.http import HttpRequest, HttpResponse, JsonResponse
from django.views.decorators.cache import never_cache
from django.views.decorators.http import require_GET

from pgqueue.conf import get_settings
from pgqueue.ops import health as health_report
from pgqueue.ops import metrics as prometheus


@never_cache
@require_GET
def metrics(request: HttpRequest) -> HttpResponse:
    """The Prometheus exposition, for a bearer token (PGQUEUE['METRICS_TOKEN']) or a logged-in staff user."""
    user = getattr(request, "user", None)
    # A placeholder or short token opens nothing unless DEBUG is on (as pgqueue_worker --metrics-port refuses it).
    token_usable = settings.DEBUG or prometheus.token_problem(get_settings().METRICS_TOKEN) is None
    if not ((token_usable and prometheus.bearer_ok(request.headers.get("Authorization")))
            or (user is not None and user.is_active and user.is_staff)):
        response = HttpResponse("pgqueue metrics need a bearer token (PGQUEUE['METRICS_TOKEN']) or a staff "
                                "login.\n", status=401, content_type="text/plain; charset=utf-8")
        response["WWW-Authenticate"] = 'Bearer realm="pgqueue metrics"'
        return response
    try:
        body = prometheus.exposition()
    except DatabaseError as exc:
        return HttpResponse(f"pgqueue metrics: the database is unavailable ({exc})\n", status=503,
                            content_type="text/plain; charset=utf-8")
    return HttpResponse(body, content_type=prometheus.CONTENT_TYPE)


@never_cache
@require_GET
def health(request: HttpRequest) -> HttpResponse:
    """JSON health: 200 when healthy, 503 when not. ?scope=live (database), ready (and migrations) or all."""
    scope = request.GET.get("scope", "all")
    if scope not in health_report.SCOPES:
        return JsonResponse({"status": "fail", "error": f"unknown scope {scope!r}; use one of "
                             f"{', '.join(health_report.SCOPES)}"}, status=400)
    result = health_report.report(scope)
    return JsonResponse(result.to_dict(), status=200 if result.ok else 503)
