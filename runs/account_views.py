"""The account page: the user's API tokens (create, shown once; revoke; expiry) and a password
change.

Tokens are made and revoked by `runs.services` (`api_token_create`, `api_token_revoke`), the
same functions behind the API's /api/tokens, so both write the same audit rows. A new token's
secret is rendered once, in the response to the POST that made it, and never stored anywhere
it could be shown again (not in the session, not in a flash message); that response is marked
no-store so the browser does not keep it either. The password form is Django's
PasswordChangeForm (old password, validators); the change itself is
`services.user_password_change`, audited.
"""

from __future__ import annotations

from datetime import timedelta

from django.contrib import messages
from django.contrib.auth import update_session_auth_hash
from django.contrib.auth.forms import PasswordChangeForm
from django.http import Http404, HttpRequest, HttpResponse, HttpResponseBase
from django.shortcuts import render
from django.urls import reverse
from django.utils import timezone
from django.utils.cache import add_never_cache_headers
from django.views.decorators.http import require_GET, require_POST

from runs import selectors
from runs.errors import ApplicationError, InvalidInput
from runs.forms import TokenCreateForm
from runs.models import ApiToken
from runs.services import api_token_create, api_token_revoke, user_password_change
from runs.views import actor_for, after_post, cursor_checked, page

TOKENS_PAGE = 50


@require_GET
@page
def account(request: HttpRequest) -> HttpResponse:
    """Tokens (one keyset page at a time) and the password form."""
    return _account_render(request)


def _account_render(request: HttpRequest, *, token_form: TokenCreateForm | None = None,
                    password_form: PasswordChangeForm | None = None, new_token: str = "",
                    new_row: ApiToken | None = None, status: int = 200,
                    error: str = "") -> HttpResponse:
    cursor = request.GET.get("cursor", "").strip() if request.method == "GET" else ""
    try:
        tokens, next_cursor = selectors.api_tokens_of(request.user, cursor=cursor_checked(cursor),
                                                      limit=TOKENS_PAGE)
    except ApplicationError as exc:
        tokens, next_cursor, status, error = [], None, 400, exc.message
    response = render(request, "runs/account.html", {
        "tokens": tokens,
        "older_url": f"{reverse('account')}?cursor={next_cursor}" if next_cursor else "",
        "paged": bool(cursor),
        "token_form": token_form or TokenCreateForm(),
        "password_form": password_form or PasswordChangeForm(request.user),
        "new_token": new_token,
        "new_row": new_row,
        "now": timezone.now(),
        "error": error,
        "nav": "account",
    }, status=status)
    if new_token:
        add_never_cache_headers(response)  # the secret must not outlive this response
    return response


@require_POST
@page
def token_create(request: HttpRequest) -> HttpResponse:
    """Create a token and show its secret, this once."""
    form = TokenCreateForm(request.POST)
    if not form.is_valid():
        return _account_render(request, token_form=form, status=422,
                               error="The token was not created; see the errors below.")
    days = form.expires_in_days()
    expires_at = timezone.now() + timedelta(days=days) if days else None
    try:
        row, token = api_token_create(user=request.user, name=form.cleaned_data["name"],
                                      expires_at=expires_at, actor=actor_for(request))
    except InvalidInput as exc:
        for name, problems in exc.fields.items():
            for problem in problems:
                form.add_error(name if name in form.fields else None, problem)
        return _account_render(request, token_form=form, status=422, error=exc.message)
    return _account_render(request, new_token=token, new_row=row)


@require_POST
@page
def token_revoke(request: HttpRequest, token_id: int) -> HttpResponseBase:
    """Revoke one of the user's tokens (someone else's is a 404, as in the API)."""
    row = ApiToken.objects.filter(pk=token_id, user=request.user).first()
    if row is None:
        raise Http404(f"Token {token_id} not found.")
    if row.revoked_at:
        messages.info(request, f"Token “{row.name}” was already revoked.")
    else:
        api_token_revoke(token=row, actor=actor_for(request))
        messages.success(request, f"Token “{row.name}” ({row.prefix}…) revoked: programs using "
                                  "it are refused from now on.")
    return after_post(request, reverse("account"))


@require_POST
@page
def password_change(request: HttpRequest) -> HttpResponseBase:
    """Change the password; this session stays logged in, every other session is logged out."""
    form = PasswordChangeForm(request.user, request.POST)
    if not form.is_valid():
        return _account_render(request, password_form=form, status=422,
                               error="The password was not changed; see the errors below.")
    user_password_change(user=request.user, password=form.cleaned_data["new_password1"],
                         actor=actor_for(request))
    update_session_auth_hash(request, request.user)
    messages.success(request, "Password changed. Other browsers logged in as you have been "
                              "logged out.")
    return after_post(request, reverse("account"))
