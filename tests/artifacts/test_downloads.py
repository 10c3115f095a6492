"""Downloads and the viewer: permission checks (another project's artifact is 404), the name in
the URL never chooses a file, only raster images are shown inline, and the previews."""

from __future__ import annotations

import pytest
from django.test import Client

from artifacts.models import Artifact
from tests.factories import MembershipFactory, ProjectFactory, UserFactory

pytestmark = pytest.mark.django_db


def _client(user) -> Client:
    client = Client()
    client.force_login(user)
    return client


def _body(response) -> bytes:
    return b"".join(response.streaming_content)


@pytest.fixture
def kept(files_task, launch_files, personas):
    run = launch_files(
        files_task(["*.txt", "*.json", "*.csv", "*.png", "*.html", "*.svg"]),
        'notes.txt=line-one data.json={"b":[1,2],"a":"x"} table.csv=name,size '
        "shot.png@8x8:red page.html=<script>alert(1)</script> pic.svg=<svg></svg>")
    return {a.name: a for a in Artifact.objects.filter(run=run)}


def test_a_member_downloads_the_file_as_an_attachment(kept, personas):
    artifact = kept["notes.txt"]
    response = _client(personas["carol"]).get(f"/artifacts/{artifact.pk}/raw/notes.txt")
    assert response.status_code == 200
    assert _body(response) == b"line-one"
    assert response["Content-Disposition"] == 'attachment; filename="notes.txt"'
    assert response["X-Content-Type-Options"] == "nosniff"
    assert "sandbox" in response["Content-Security-Policy"]
    assert response["ETag"] == f'"{artifact.sha256}"'
    again = _client(personas["carol"]).get(f"/artifacts/{artifact.pk}/raw/notes.txt",
                                           HTTP_IF_NONE_MATCH=f'"{artifact.sha256}"')
    assert again.status_code == 304


@pytest.mark.parametrize("name", ["../../../etc/passwd", "/etc/passwd", "..%2F..%2Fsettings.py",
                                  "data.json", "notes.txt/../data.json"])
def test_the_name_in_the_url_never_selects_another_file(kept, personas, name):
    artifact = kept["notes.txt"]
    response = _client(personas["alice"]).get(f"/artifacts/{artifact.pk}/raw/{name}")
    assert response.status_code == 404


def test_another_projects_artifact_is_404_for_pages_and_api(kept, personas, api_for):
    artifact = kept["notes.txt"]
    outsider = personas["mallory"]
    for url in (f"/artifacts/{artifact.pk}/", f"/artifacts/{artifact.pk}/raw/notes.txt",
                f"/runs/{artifact.run_id}/artifacts"):
        assert _client(outsider).get(url).status_code == 404, url
    api = api_for("mallory")
    for url in (f"/api/artifacts/{artifact.pk}", f"/api/artifacts/{artifact.pk}/download",
                f"/api/runs/{artifact.run_id}/artifacts"):
        response = api.get(url)
        assert response.status_code == 404, url
        assert response.json()["error"]["code"] == "not_found"
    # A member of another project, too: membership is per project.
    other = ProjectFactory(slug="elsewhere")
    stranger = UserFactory(username="stranger")
    MembershipFactory(project=other, user=stranger, role="maintainer")
    assert _client(stranger).get(f"/artifacts/{artifact.pk}/").status_code == 404
    # And anonymous visitors are sent to log in.
    assert Client().get(f"/artifacts/{artifact.pk}/raw/notes.txt").status_code == 302


def test_only_raster_images_are_shown_inline(kept, personas):
    client = _client(personas["carol"])
    image = client.get(f"/artifacts/{kept['shot.png'].pk}/raw/shot.png?inline=1")
    assert image["Content-Disposition"].startswith("inline")
    assert image["Content-Type"] == "image/png"
    for name in ("page.html", "pic.svg"):
        response = client.get(f"/artifacts/{kept[name].pk}/raw/{name}?inline=1")
        assert response["Content-Disposition"].startswith("attachment"), name
        assert response["X-Content-Type-Options"] == "nosniff"


def test_the_viewer_previews_text_json_csv_and_images(kept, personas):
    client = _client(personas["carol"])
    text = client.get(f"/artifacts/{kept['notes.txt'].pk}/").content.decode()
    assert 'id="L1"' in text and "line-one" in text
    pretty = client.get(f"/artifacts/{kept['data.json'].pk}/").content.decode()
    assert "JSON, formatted" in pretty and "&quot;b&quot;: [" in pretty
    table = client.get(f"/artifacts/{kept['table.csv'].pk}/").content.decode()
    assert '<th scope="col">name</th>' in table and '<th scope="col">size</th>' in table
    image = client.get(f"/artifacts/{kept['shot.png'].pk}/").content.decode()
    assert f"/artifacts/{kept['shot.png'].pk}/raw/shot.png?inline=1" in image
    html = client.get(f"/artifacts/{kept['page.html'].pk}/").content.decode()
    assert "<script>alert(1)</script>" not in html  # shown as escaped text, never rendered
    assert "&lt;script&gt;alert(1)&lt;/script&gt;" in html
    svg = client.get(f"/artifacts/{kept['pic.svg'].pk}/").content.decode()
    assert "There is no preview for image/svg+xml files" in svg


def test_the_api_lists_and_downloads(kept, api_for):
    artifact = kept["data.json"]
    api = api_for("carol")
    page = api.get(f"/api/runs/{artifact.run_id}/artifacts?limit=2")
    assert page.status_code == 200
    body = page.json()
    assert len(body["items"]) == 2 and body["next_cursor"]
    rest = api.get(f"/api/runs/{artifact.run_id}/artifacts?cursor={body['next_cursor']}").json()
    names = {i["name"] for i in body["items"] + rest["items"]}
    assert names == set(kept)
    one = api.get(f"/api/artifacts/{artifact.pk}").json()
    assert one["sha256"] == artifact.sha256 and one["comparison"] is None
    download = api.get(one["download_url"].split("testserver", 1)[1])
    assert download.status_code == 200
    assert b"".join(download.streaming_content) == b'{"b":[1,2],"a":"x"}'


def test_file_lists_cost_the_same_queries_for_few_or_many_files(files_task, launch_files,
                                                                 personas, api_for,
                                                                 django_assert_num_queries):
    task = files_task(["*.txt", "*.png"])
    few = launch_files(task, "a.txt=1 b.png@4x4:")
    many = launch_files(task, " ".join(f"f{i}.txt={i}" for i in range(12)) + " c.png@4x4:")
    client = _client(personas["carol"])
    api = api_for("carol")
    api.get("/api/runs")  # the token's first use of the day records last_used_at: not counted
    counts = []
    for run in (few, many):
        from django.db import connection
        from django.test.utils import CaptureQueriesContext

        with CaptureQueriesContext(connection) as section:
            assert client.get(f"/runs/{run.pk}/artifacts").status_code == 200
        with CaptureQueriesContext(connection) as listing:
            assert api.get(f"/api/runs/{run.pk}/artifacts").status_code == 200
        counts.append((len(section), len(listing)))
    assert counts[0] == counts[1]
