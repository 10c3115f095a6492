"""Page routes of artifacts and baselines (artifacts.views)."""

from django.urls import path

import runs.urls  # noqa: F401  registers the `id` path converter
from artifacts import views

urlpatterns = [
    path("runs/<id:run_id>/artifacts", views.run_artifacts, name="run_artifacts"),
    path("runs/<id:run_id>/baseline", views.run_baseline, name="run_baseline"),
    path("runs/<id:run_id>/baseline/clear", views.run_baseline_clear,
         name="run_baseline_clear"),
    path("runs/<id:run_id>/compare", views.run_compare_view, name="run_compare"),
    path("runs/<id:run_id>/delete", views.run_delete_view, name="run_delete"),
    path("artifacts/<id:artifact_id>/", views.artifact_view, name="artifact_view"),
    path("artifacts/<id:artifact_id>/raw/<path:name>", views.artifact_raw, name="artifact_raw"),
    path("artifacts/<id:artifact_id>/compare/<str:picture>.png", views.artifact_picture,
         name="artifact_picture"),
]
