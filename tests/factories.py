"""factory-boy factories for the domain rows tests need."""

from __future__ import annotations

import factory
from django.contrib.auth import get_user_model

from runs.models import Membership, Project, Role, Task


class UserFactory(factory.django.DjangoModelFactory):
    class Meta:
        model = get_user_model()
        django_get_or_create = ("username",)

    username = factory.Sequence(lambda n: f"user{n}")
    password = factory.django.Password("correct horse battery staple")


class ProjectFactory(factory.django.DjangoModelFactory):
    class Meta:
        model = Project
        django_get_or_create = ("slug",)

    slug = factory.Sequence(lambda n: f"project-{n}")
    name = factory.LazyAttribute(lambda o: o.slug.title())


class MembershipFactory(factory.django.DjangoModelFactory):
    class Meta:
        model = Membership

    project = factory.SubFactory(ProjectFactory)
    user = factory.SubFactory(UserFactory)
    role = Role.VIEWER


class TaskFactory(factory.django.DjangoModelFactory):
    class Meta:
        model = Task

    project = factory.SubFactory(ProjectFactory)
    slug = factory.Sequence(lambda n: f"task-{n}")
    name = factory.LazyAttribute(lambda o: o.slug.title())
    kind = "command"
    spec = factory.LazyFunction(lambda: {"argv": ["echo", "Hello, {{ name }}!"]})
    params_schema = factory.LazyFunction(
        lambda: [{"name": "name", "type": "string", "required": True}]
    )
    timeout_seconds = 60
