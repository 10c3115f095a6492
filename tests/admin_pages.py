"""Helpers for the back-office tests: a logged-in staff client, an admin action posted the way
the changelist form posts it, the messages shown afterwards, and the queries a page costs."""

from __future__ import annotations

import html
import re

from django.db import connection
from django.test import Client
from django.test.utils import CaptureQueriesContext

from tests.factories import UserFactory


def staff_client(username: str = "root", *, superuser: bool = True, perms: tuple[str, ...] = ()
                 ) -> Client:
    """A client logged in as a staff user (a superuser unless told otherwise, then with only
    `perms`, given as "app_label.codename")."""
    from django.contrib.auth.models import Permission

    user = UserFactory(username=username, is_staff=True, is_superuser=superuser)
    for perm in perms:
        app_label, codename = perm.split(".")
        user.user_permissions.add(Permission.objects.get(content_type__app_label=app_label,
                                                         codename=codename))
    client = Client()
    client.force_login(user)
    return client


def messages_on(page: str) -> list[tuple[str, str]]:
    """(level, text) of the admin messages on a page."""
    listed = re.search(r'<ul class="messagelist">(.*?)</ul>', page, re.S)
    return [(level, html.unescape(text)) for level, text in
            re.findall(r'<li class="(\w+)">(.*?)</li>', listed.group(1) if listed else "", re.S)]


def act(client: Client, changelist: str, action: str, ids: list[int], **extra: str
        ) -> list[tuple[str, str]]:
    """Post an admin action on `ids` as the changelist form does, follow the redirect, and
    return the messages shown."""
    response = client.post(changelist, {"action": action, "_selected_action": ids, **extra},
                           headers={"User-Agent": "admin-browser"})
    assert response.status_code == 302, response.content[:500]
    return messages_on(client.get(response["Location"]).content.decode())


def queries_for(client: Client, url: str) -> int:
    """How many queries a GET of `url` makes (asserting it renders)."""
    with CaptureQueriesContext(connection) as captured:
        response = client.get(url)
    assert response.status_code == 200, response.content[:500]
    return len(captured.captured_queries)
