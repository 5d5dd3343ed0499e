"""URLs for include("pgqueue.urls"): /metrics (Prometheus) and /health (probes), each with or without a
trailing slash (probes and scrapers are configured by hand; neither should get a 404 for a slash)."""

from django.urls import path

from pgqueue import views

app_name = "pgqueue"
urlpatterns = [
    path("metrics", views.metrics, name="metrics"),
    path("metrics/", views.metrics),
    path("health", views.health, name="health"),
    path("health/", views.health),
]
