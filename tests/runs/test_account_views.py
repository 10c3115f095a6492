"""The account page (runs.account_views): API tokens made and revoked by the same services as
the API's /api/tokens (shown once, audited, expiring), and a password change.

Personas come from tests/conftest.py: alice (maintainer), bob (operator), carol (viewer) of
project `demo`, and mallory, who is in no project.
"""

from __future__ import annotations

import html
import re
from datetime import timedelta

import pytest
from django.test import Client
from django.utils import timezone

from runs.models import ApiToken, AuditLog
from runs.services import api_token_create, api_token_revoke
from runs.transitions import Actor
from tests.conftest import PASSWORD, ApiClient

pytestmark = pytest.mark.django_db

ACCOUNT = "/account/"


def messages_in(page: str) -> list[tuple[str, str]]:
    return [(level, html.unescape(text)) for level, text in
            re.findall(r'<li class="notice notice-(\w+)">(.*?)</li>', page, re.S)]


def shown_token(page: str) -> str:
    return re.search(r'id="new-token" class="mono" value="(sy_[^"]+)"', page).group(1)


def test_the_account_page_needs_login():
    response = Client().get(ACCOUNT)
    assert response.status_code == 302 and response["Location"].startswith("/login/")


def test_a_new_token_is_shown_once_and_works(client_for, personas):
    client = client_for("bob")
    response = client.post(f"{ACCOUNT}tokens", {"name": "CI deploy", "expires_in": "30"},
                           headers={"User-Agent": "browser"})
    assert response.status_code == 200
    assert "no-store" in response["Cache-Control"]
    page = response.content.decode()
    token = shown_token(page)
    row = ApiToken.objects.get()
    assert token.startswith(f"sy_{row.prefix}_") and row.user == personas["bob"]
    assert row.expires_at - timezone.now() == pytest.approx(timedelta(days=30),
                                                            abs=timedelta(minutes=1))
    assert "Copy it now: it is shown this once." in page
    audit = AuditLog.objects.get(action="api_token.create")
    assert (audit.actor_label, audit.via, audit.user_agent) == ("bob", "ui", "browser")
    assert token not in str(audit.changes)
    # It works, and it is never shown again.
    assert ApiClient(token).get("/api/projects").status_code == 200
    again = client.get(ACCOUNT).content.decode()
    assert token not in again and f"sy_{row.prefix}_…" in again


def test_a_token_may_never_expire(client_for):
    client_for("bob").post(f"{ACCOUNT}tokens", {"name": "forever", "expires_in": ""})
    assert ApiToken.objects.get().expires_at is None


@pytest.mark.parametrize(
    ("data", "message"),
    [
        ({"name": "", "expires_in": "30"}, "This field is required"),
        ({"name": "   ", "expires_in": "30"}, "This field is required"),
        ({"name": "x" * 101, "expires_in": "30"}, "at most 100 characters"),
        ({"name": "a\x00b", "expires_in": "30"}, "Null characters are not allowed"),
        ({"name": "ok", "expires_in": "9999"}, "Select a valid choice"),
    ],
)
def test_a_bad_token_form_is_a_field_error(client_for, data, message):
    response = client_for("bob").post(f"{ACCOUNT}tokens", data)
    assert response.status_code == 422
    assert message in html.unescape(response.content.decode())
    assert 'aria-invalid="true"' in response.content.decode()
    assert not ApiToken.objects.exists()


def test_tokens_list_their_state(client_for, personas):
    bob = personas["bob"]
    api_token_create(user=bob, name="active one", expires_at=timezone.now() + timedelta(days=3))
    api_token_create(user=bob, name="expired one", expires_at=timezone.now() - timedelta(days=1))
    revoked, _ = api_token_create(user=bob, name="revoked one")
    api_token_revoke(token=revoked, actor=Actor(user=bob, via="api", label="bob"))
    api_token_create(user=personas["alice"], name="alice's")
    page = client_for("bob").get(ACCOUNT).content.decode()
    states = dict(re.findall(r'<th scope="row">([^<]+)</th>.*?class="badge badge-\w+">(\w+)<',
                             page, re.S))
    assert states == {"active one": "Active", "expired one": "Expired",
                      "revoked one": "Revoked"}
    assert "alice&#x27;s" not in page


def test_revoking_a_token(client_for, personas):
    row, token = api_token_create(user=personas["bob"], name="old")
    client = client_for("bob")
    response = client.post(f"{ACCOUNT}tokens/{row.pk}/revoke")
    assert response.status_code == 303 and response["Location"] == ACCOUNT
    row.refresh_from_db()
    assert row.revoked_at is not None
    assert AuditLog.objects.filter(action="api_token.revoke", via="ui").count() == 1
    assert ApiClient(token).get("/api/projects").status_code == 401
    page = client.get(ACCOUNT).content.decode()
    assert ("success", f"Token “old” ({row.prefix}…) revoked: programs using it are refused "
                       "from now on.") in messages_in(page)
    client.post(f"{ACCOUNT}tokens/{row.pk}/revoke")  # again: a message, no second audit row
    assert AuditLog.objects.filter(action="api_token.revoke").count() == 1


def test_someone_elses_token_is_a_404(client_for, personas):
    row, _ = api_token_create(user=personas["alice"], name="hers")
    assert client_for("bob").post(f"{ACCOUNT}tokens/{row.pk}/revoke").status_code == 404
    assert client_for("bob").post(f"{ACCOUNT}tokens/99999999999999999999/revoke"
                                  ).status_code == 404
    row.refresh_from_db()
    assert row.revoked_at is None


@pytest.mark.parametrize("path", [f"{ACCOUNT}tokens", f"{ACCOUNT}tokens/1/revoke",
                                  f"{ACCOUNT}password"])
def test_account_writes_are_post_only_and_need_the_csrf_token(client_for, personas, path):
    api_token_create(user=personas["bob"], name="t")
    assert client_for("bob").get(path).status_code == 405
    response = client_for("bob", enforce_csrf_checks=True).post(path, {"name": "x"})
    assert response.status_code == 403


def test_changing_the_password(client_for, personas):
    client = client_for("bob")
    response = client.post(f"{ACCOUNT}password", {
        "old_password": PASSWORD, "new_password1": "a much longer passphrase 42",
        "new_password2": "a much longer passphrase 42"})
    assert response.status_code == 303
    bob = personas["bob"]
    bob.refresh_from_db()
    assert bob.check_password("a much longer passphrase 42")
    assert client.get(ACCOUNT).status_code == 200  # this session stays logged in
    audit = AuditLog.objects.get(action="user.password_change")
    assert audit.changes == {} and audit.actor_label == "bob"
    assert Client().login(username="bob", password="a much longer passphrase 42")


@pytest.mark.parametrize(
    ("data", "message"),
    [
        ({"old_password": "wrong", "new_password1": "a much longer passphrase 42",
          "new_password2": "a much longer passphrase 42"}, "Your old password was entered"),
        ({"old_password": PASSWORD, "new_password1": "a much longer passphrase 42",
          "new_password2": "something else entirely 42"}, "didn’t match"),
        ({"old_password": PASSWORD, "new_password1": "short", "new_password2": "short"},
         "too short"),
        ({"old_password": PASSWORD, "new_password1": "password", "new_password2": "password"},
         "too common"),
    ],
)
def test_a_bad_password_change_says_why(client_for, personas, data, message):
    response = client_for("bob").post(f"{ACCOUNT}password", data)
    assert response.status_code == 422
    assert message in html.unescape(response.content.decode())
    personas["bob"].refresh_from_db()
    assert personas["bob"].check_password(PASSWORD)
    assert not AuditLog.objects.filter(action="user.password_change").exists()


def test_no_account_input_causes_a_500(client_for):
    client = client_for("bob")
    for path, data in [(f"{ACCOUNT}tokens", {"name": ["a", "b"], "expires_in": ["1", "x"]}),
                       (f"{ACCOUNT}tokens", b"name=%ED%A0%80&expires_in=%00"),
                       (f"{ACCOUNT}password", b"old_password=%00&new_password1=%FF"),
                       (f"{ACCOUNT}?cursor=garbage!", None),
                       (f"{ACCOUNT}?cursor=" + "A" * 5000, None)]:
        if data is None:
            response = client.get(path)
        elif isinstance(data, bytes):
            response = client.post(path, data, content_type="application/x-www-form-urlencoded")
        else:
            response = client.post(path, data)
        assert response.status_code < 500, path


def test_tokens_page_by_cursor(client_for, personas, monkeypatch):
    monkeypatch.setattr("runs.account_views.TOKENS_PAGE", 2)
    for n in range(3):
        api_token_create(user=personas["bob"], name=f"t{n}")
    client = client_for("bob")
    first = client.get(ACCOUNT).content.decode()
    assert "t2" in first and "t1" in first and ">t0<" not in first
    older = re.search(r'href="(/account/\?cursor=[^"]+)" rel="next"', first).group(1)
    second = client.get(older).content.decode()
    assert ">t0<" in second and "Newest tokens" in second


def test_the_account_page_query_count_does_not_grow(client_for, personas,
                                                    django_assert_num_queries):
    # session, user, tokens, and the worker banner's two.
    client = client_for("bob")
    for n in range(3):
        api_token_create(user=personas["bob"], name=f"a{n}")
    with django_assert_num_queries(5):
        assert client.get(ACCOUNT).status_code == 200
    for n in range(6):
        api_token_create(user=personas["bob"], name=f"b{n}")
    with django_assert_num_queries(5):
        assert client.get(ACCOUNT).status_code == 200
