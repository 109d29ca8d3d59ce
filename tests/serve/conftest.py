"""The demo's tests share one pair of trained runs (serve_helpers.demo_runs, a session fixture)."""

from serve_helpers import demo_runs  # noqa: F401 - a fixture, found by pytest here
