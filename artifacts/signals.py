"""Storage follows the database: when an Artifact or Comparison row is deleted, by any path
(a service, the admin, a cascade from its run, task or project), its files are deleted from
storage after the transaction commits. A rolled-back delete keeps them. The rare file whose
delete fails is found later by `manage.py prune`, which sweeps unreferenced keys."""

from __future__ import annotations

from django.db import transaction
from django.db.models.signals import post_delete
from django.dispatch import receiver

from artifacts.models import Artifact, Comparison
from artifacts.storage import keys_delete


@receiver(post_delete, sender=Artifact, dispatch_uid="artifact_files_delete")
def artifact_files_delete(sender, instance: Artifact, **kwargs) -> None:
    key = instance.storage_key
    transaction.on_commit(lambda: keys_delete([key]))


@receiver(post_delete, sender=Comparison, dispatch_uid="comparison_files_delete")
def comparison_files_delete(sender, instance: Comparison, **kwargs) -> None:
    keys = [instance.diff_key, instance.heatmap_key]
    transaction.on_commit(lambda: keys_delete(keys))
