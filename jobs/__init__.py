"""The worker side on django-q2: dispatch, the execute task, executors per task kind, log
ingestion, heartbeats."""
