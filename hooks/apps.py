"""App config of the webhooks app (`hooks`)."""

from django.apps import AppConfig


class HooksConfig(AppConfig):
    name = "hooks"
    verbose_name = "Webhooks"
