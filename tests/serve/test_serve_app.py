"""The demo's web app over plain HTTP (Starlette's TestClient): the page, the JSON endpoints, and
every way a request can be wrong answered with JSON and a 4xx, never a traceback."""

from __future__ import annotations

import pytest
from PIL import Image
from serve_helpers import drawn_png, photo_jpeg, png_bytes
from starlette.testclient import TestClient

from cnnlab.checkpoint import RunError
from cnnlab.serve import DemoRun
from cnnlab.serve.app import LOOPBACK_HOSTS, create_app


@pytest.fixture(scope="module")
def app(demo_runs):
    return create_app([demo_runs["default"], demo_runs["article"]], max_bytes=2_000_000, max_pixels=4_000_000)


@pytest.fixture()
def client(app):
    with TestClient(app, raise_server_exceptions=False) as c:
        yield c


def test_the_page_and_its_files(client):
    r = client.get("/")
    assert r.status_code == 200 and r.headers["content-type"].startswith("text/html")
    assert '<canvas id="pad"' in r.text and "/static/app.js" in r.text
    assert "http" not in r.text.replace("http-equiv", "")  # nothing from elsewhere: works offline
    csp = r.headers["content-security-policy"]
    assert "default-src 'self'" in csp and r.headers["x-content-type-options"] == "nosniff"
    for path, kind in (("/static/app.js", "javascript"), ("/static/style.css", "text/css")):
        r = client.get(path)
        assert r.status_code == 200 and kind in r.headers["content-type"] and "http" not in r.text.lower().replace(
            "http.", "")


def test_the_runs(client, demo_runs):
    runs = client.get("/api/runs").json()
    assert [(r["id"], r["name"], r["architecture"]) for r in runs] == [(0, "default", "fast"), (1, "article", "article")]
    info = client.get("/api/runs/1").json()
    assert info["parameters"] == 4408 and "78 parameters" in info["shared_weights"]
    assert info["test_accuracy"] == DemoRun.load(demo_runs["article"]).run.metrics["test_accuracy"]
    assert str(demo_runs["article"].parent) not in client.get("/api/runs").text


def test_a_drawn_seven(client):
    r = client.post("/api/runs/0/predict", content=drawn_png(), headers={"content-type": "image/png"})
    assert r.status_code == 200, r.text
    a = r.json()
    assert a["name"] == "7" and len(a["layers"]) == 6 and a["gradcam"]["class"] == 7
    assert r.headers["server-timing"].startswith("cnnlab;dur=") and r.headers["cache-control"] == "no-store"
    assert client.post("/api/runs/1/predict", content=drawn_png()).json()["name"] == "7"  # the article's net too


def test_a_photo_of_a_digit(client):
    a = client.post("/api/runs/0/predict", content=photo_jpeg(), headers={"content-type": "image/jpeg"}).json()
    assert a["name"] == "4" and a["steps"][0]["caption"] == "grayscale"


@pytest.mark.parametrize("body, status, words", [
    (b"just some text, renamed to digit.png", 415, "not a picture"),
    (b"", 400, "empty"),
    (png_bytes(Image.new("L", (2500, 2000), 255)), 413, "4 megapixels"),
    (drawn_png()[:400], 400, "damaged"),
    (png_bytes(Image.new("L", (300, 300), 255)), 422, "no digit found"),
    (b"\x00" * 2_000_001, 413, "the limit is 1.9 MB"),
])
def test_bad_uploads_are_json_4xx(client, body, status, words):
    r = client.post("/api/runs/0/predict", content=body, headers={"content-type": "image/png"})
    assert r.status_code == status and r.headers["content-type"] == "application/json"
    assert words in r.json()["error"] and "Traceback" not in r.text


def test_an_upload_announcing_too_many_bytes_is_refused_unread(client):
    def body():  # a client that says 50 MB are coming, and would send them forever
        while True:
            yield b"\x00" * 65536

    r = client.post("/api/runs/0/predict", content=body(), headers={"content-length": str(50 * 2**20)})
    assert r.status_code == 413 and "the limit is" in r.json()["error"]


@pytest.mark.parametrize("method, path, status", [
    ("GET", "/api/runs/2", 404),
    ("POST", "/api/runs/7/predict", 404),
    ("GET", "/api/runs/-1", 404),
    ("GET", "/api/runs/..%2F..%2Fetc%2Fpasswd", 404),
    ("POST", "/api/runs/%2Ftmp%2Fmyrun/predict", 404),
    ("GET", "/api/runs/0/predict", 405),
    ("GET", "/static/%2e%2e/engine.py", 404),
    ("GET", "/static/../app.py", 404),
    ("GET", "/nothing-here", 404),
])
def test_only_the_runs_named_at_start_and_the_pages_files(client, method, path, status):
    r = client.request(method, path)
    assert r.status_code == status and "error" in r.json()
    assert "import" not in r.text  # no source file served


def test_uploads_are_never_written(client, demo_runs, tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    before = {p: sorted(p.rglob("*")) for p in (tmp_path, *demo_runs.values())}
    for body in (drawn_png(), photo_jpeg(), b"not a picture"):
        client.post("/api/runs/0/predict", content=body, headers={"content-disposition": 'filename="../../x.png"'})
    assert before == {p: sorted(p.rglob("*")) for p in before}


def test_a_server_fault_is_json_without_details(client, monkeypatch):
    def broken(self, picture, notes=(), started=None):
        raise RuntimeError("secret internals at /home/me/runs")

    monkeypatch.setattr(DemoRun, "predict", broken)
    r = client.post("/api/runs/0/predict", content=drawn_png())
    assert r.status_code == 500 and r.json() == {"error": "the server failed on this request (its log says why)"}
    assert "secret" not in r.text


def test_loopback_only_answers_its_own_names(demo_runs):
    app = create_app([demo_runs["article"]], trusted_hosts=LOOPBACK_HOSTS, warm_up=False)
    with TestClient(app, base_url="http://127.0.0.1:8000") as c:
        assert c.get("/api/runs").status_code == 200
        assert c.get("/api/runs", headers={"host": "localhost:8000"}).status_code == 200
        assert c.get("/api/runs", headers={"host": "attacker.example"}).status_code == 400  # DNS rebinding


def test_create_app_needs_real_runs(tmp_path):
    with pytest.raises(RunError, match="no such run directory"):
        create_app([tmp_path / "missing"])
    with pytest.raises(ValueError, match="no run to serve"):
        create_app([])
