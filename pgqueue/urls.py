"""URLs for include("pgqueue.urls"): /metrics (Prometheus) and /health (probes)."""

from django.urls import path

from pgqueue import views

app_name = "pgqueue"
urlpatterns = [
    path("metrics", views.metrics, name="metrics"),
    path("health", views.health, name="health"),
]
