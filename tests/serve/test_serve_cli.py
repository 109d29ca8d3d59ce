"""`cnnlab serve`: its options, and that it listens on this computer only unless told otherwise."""

from __future__ import annotations

import sys

import pytest

from cnnlab.cli import build_parser, main


@pytest.fixture()
def started(monkeypatch):
    """What `cnnlab serve` hands to uvicorn, instead of serving."""
    import uvicorn

    calls = []
    monkeypatch.setattr(uvicorn, "run", lambda app, **kw: calls.append((app, kw)))
    return calls


def test_defaults():
    args = build_parser().parse_args(["serve"])
    assert (args.runs, args.host, args.port) == ([], "127.0.0.1", 8000)


def test_serves_the_runs_named_on_loopback(demo_runs, started, capsys):
    assert main(["serve", str(demo_runs["default"]), str(demo_runs["article"]), "--port", "8123"]) == 0
    app, kw = started[0]
    assert kw["host"] == "127.0.0.1" and kw["port"] == 8123
    out = capsys.readouterr().out
    assert "http://127.0.0.1:8123/" in out and "run 1: " in out and "warning" not in out
    from starlette.testclient import TestClient

    with TestClient(app, base_url="http://127.0.0.1:8123") as c:  # only its own host names answered
        assert [r["name"] for r in c.get("/api/runs").json()] == ["default", "article"]
        assert c.get("/api/runs", headers={"host": "attacker.example"}).status_code == 400


def test_every_run_under_runs_by_default(demo_runs, started, monkeypatch, tmp_path):
    monkeypatch.chdir(tmp_path)
    (tmp_path / "runs").symlink_to(demo_runs["default"].parent, target_is_directory=True)  # ./runs: both runs
    assert main(["serve"]) == 0
    from starlette.testclient import TestClient

    with TestClient(started[0][0], base_url="http://127.0.0.1:8000") as c:
        assert sorted(r["name"] for r in c.get("/api/runs").json()) == ["article", "default"]


def test_another_host_is_warned_about(demo_runs, started, capsys):
    assert main(["serve", str(demo_runs["article"]), "--host", "0.0.0.0"]) == 0
    assert started[0][1]["host"] == "0.0.0.0"
    assert "anyone who can reach this computer" in capsys.readouterr().out


@pytest.mark.parametrize("argv, words, code", [
    (["serve", "no/such/run"], "no such run directory", 3),
    (["serve", "--port", "70000", "x"], "--port must be 1 to 65535", 2),
])
def test_errors_are_one_line(argv, words, code, started, capsys, tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    if "x" in argv:
        argv = argv[:-1] + [str(tmp_path)]
    assert main(argv) == code
    err = capsys.readouterr().err
    assert words in err and err.count("\n") == 1 and not started


def test_nothing_to_serve(started, capsys, tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    assert main(["serve"]) == 3
    assert "train one first" in capsys.readouterr().err


def test_without_the_demo_extra(monkeypatch, capsys, tmp_path):
    monkeypatch.setitem(sys.modules, "uvicorn", None)  # import uvicorn -> ImportError
    assert main(["serve", str(tmp_path)]) == 3  # a missing optional package: bad input
    assert "pip install 'cnnlab[demo]'" in capsys.readouterr().err
