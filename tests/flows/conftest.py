"""One Prefect test harness for every flow test (starting one costs seconds)."""

from __future__ import annotations

import pytest

# The path part of the webhook URL: a secret that must never be written anywhere.
SECRET = "hooks/T000/B000/monitor-secret-7f3a"


@pytest.fixture(scope="session")
def prefect_harness():
    from prefect.testing.utilities import prefect_test_harness

    with prefect_test_harness(server_startup_timeout=120):
        yield


@pytest.fixture
def receiver(webhook):
    """An Apprise ``json://`` URL to the shared local webhook, and the bodies it received."""
    port, received = webhook
    return f"json://127.0.0.1:{port}/{SECRET}", received
