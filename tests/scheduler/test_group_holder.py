"""worker._group_holder: the one verdict on whose run holds a worker group name (no Ray needed)."""

import pytest

from rlinf_embodied.scheduler import worker


@pytest.fixture
def runs(monkeypatch):
    monkeypatch.setattr(worker, "current_job", lambda: "me")
    monkeypatch.setattr(worker, "other_run", lambda job: {"JobID": job} if job == "alive" else None)


@pytest.mark.parametrize(
    "info, expected",
    [
        (None, ("free", None)),
        ({"job": "alive"}, ("other", {"JobID": "alive"})),
        ({"job": "me"}, ("ours", None)),
        ({"job": None}, ("ours", None)),
        ({}, ("ours", None)),
        ({"job": "dead"}, ("ended", None)),
    ],
)
def test_group_holder(runs, info, expected):
    assert worker._group_holder(info) == expected
