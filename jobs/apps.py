from django.apps import AppConfig


class JobsConfig(AppConfig):
    name = "jobs"
    verbose_name = "Jobs"

    def ready(self) -> None:
        from django_q.signals import post_spawn

        from jobs.registry import on_worker_spawn

        post_spawn.connect(on_worker_spawn, dispatch_uid="switchyard-worker-registry")
