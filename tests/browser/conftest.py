"""Browser tests: Playwright driving Debian's Chromium against pytest-django's live_server, with
a real django-q2 worker cluster (`manage.py qcluster` in a child process) on the same test
database (the SQLite test file under var/, or PostgreSQL's test_ database).

Screenshots: `shot(page, name)` writes PNGs under the test's tmp dir; with
SWITCHYARD_SCREENSHOTS=1 it writes them to docs/screenshots/ instead, which is how the ones in
the docs are made:

    SWITCHYARD_SCREENSHOTS=1 .venv/bin/pytest tests/browser -q
"""

from __future__ import annotations

import os
from collections.abc import Iterator
from pathlib import Path

import pytest
from django.conf import settings as django_settings

from tests.conftest import PASSWORD, QCluster, wait_for

ROOT = Path(django_settings.BASE_DIR)
CHROMIUM = os.environ.get("SWITCHYARD_CHROMIUM", "/usr/bin/chromium")
CHROMIUM_ARGS = ["--no-sandbox", "--disable-gpu", "--disable-background-networking",
                 "--disable-component-update", "--disable-sync", "--no-first-run"]
SCREENSHOTS = ROOT / "docs" / "screenshots"
# Every wait on the page is on a condition; this bounds each one. Generous: two cores are
# shared with other work, and a worker cluster starts in a few seconds.
WAIT_MS = 30_000


@pytest.fixture(scope="module")
def _async_unsafe_allowed() -> Iterator[None]:
    # Playwright's sync API keeps an asyncio loop running in this thread, and Django refuses
    # ORM calls from a thread with a running loop. Here that is safe: the tests call the ORM
    # synchronously and nothing else runs on that loop. Only for these modules, never in
    # settings.
    previous = os.environ.get("DJANGO_ALLOW_ASYNC_UNSAFE")
    os.environ["DJANGO_ALLOW_ASYNC_UNSAFE"] = "true"
    yield
    if previous is None:
        os.environ.pop("DJANGO_ALLOW_ASYNC_UNSAFE", None)
    else:
        os.environ["DJANGO_ALLOW_ASYNC_UNSAFE"] = previous


@pytest.fixture(scope="module")
def browser(_async_unsafe_allowed):
    if not Path(CHROMIUM).exists():
        pytest.skip(f"no Chromium at {CHROMIUM} (apt-get install chromium, or set "
                    "SWITCHYARD_CHROMIUM)")
    from playwright.sync_api import expect, sync_playwright

    expect.set_options(timeout=WAIT_MS)
    with sync_playwright() as playwright:
        chromium = playwright.chromium.launch(executable_path=CHROMIUM, args=CHROMIUM_ARGS)
        yield chromium
        chromium.close()


class Pages:
    """Opens browser pages (each its own context: own cookies) on the live server."""

    def __init__(self, browser, live_server) -> None:
        self.browser = browser
        self.base = live_server.url
        self.contexts: list = []

    def new(self, *, width: int = 1280, height: int = 900):
        context = self.browser.new_context(
            base_url=self.base, viewport={"width": width, "height": height},
            locale="en-US", timezone_id="Europe/Berlin",
        )
        context.set_default_timeout(WAIT_MS)
        self.contexts.append(context)
        page = context.new_page()
        page.dialogs = []  # every confirm() the page raised, accepted

        def accept(dialog) -> None:
            page.dialogs.append(dialog.message)
            dialog.accept()

        page.on("dialog", accept)
        return page

    def logged_in(self, username: str, **size):
        """A page of `username`, logged in through the login form."""
        page = self.new(**size)
        login(page, username)
        return page

    def close(self) -> None:
        for context in self.contexts:
            context.close()


def login(page, username: str) -> None:
    from playwright.sync_api import expect

    page.goto("/login/")
    page.get_by_label("Username").fill(username)
    page.get_by_label("Password").fill(PASSWORD)
    page.get_by_role("button", name="Log in").click()
    expect(page.get_by_role("heading", name="Dashboard", level=1)).to_be_visible()


@pytest.fixture
def pages(browser, live_server, settings) -> Iterator[Pages]:
    # The live server runs in this process: settings changed here apply to it too.
    settings.SWITCHYARD_WORKER_STATUS_CACHE_SECONDS = 0
    opened = Pages(browser, live_server)
    yield opened
    opened.close()


@pytest.fixture
def shot(tmp_path):
    """shot(page, name): a PNG of the page, into docs/screenshots with SWITCHYARD_SCREENSHOTS=1
    (unless docs=False: a picture for reviewing a page, never for the docs)."""
    to_docs = os.environ.get("SWITCHYARD_SCREENSHOTS") == "1"

    def take(page, name: str, *, full_page: bool = True, docs: bool = True) -> Path:
        into = SCREENSHOTS if to_docs and docs else tmp_path / "screenshots"
        into.mkdir(parents=True, exist_ok=True)
        path = into / f"{name}.png"
        # No focus ring or caret from the last field filled in: the page as a reader sees it.
        page.evaluate("document.activeElement && document.activeElement.blur()")
        page.evaluate("document.fonts.ready")
        page.screenshot(path=str(path), full_page=full_page, animations="disabled",
                        caret="hide")
        return path

    return take


@pytest.fixture
def worker(live_server, transactional_db, tmp_path) -> Iterator[QCluster]:
    """A running worker cluster, registered as alive before the test starts."""
    from jobs.registry import workers_alive

    cluster = QCluster(tmp_path, "browser-tests", SWITCHYARD_LOG_BATCH_SECONDS="0.1")
    try:
        wait_for(lambda: cluster.proc.poll() is None and workers_alive().exists(), timeout=60,
                 interval=0.1, message="the worker cluster to register")
        yield cluster
    finally:
        cluster.stop()
