"""Shared pytest fixtures."""
from __future__ import annotations

from pathlib import Path

import pytest

#: real reference data (read-only), next to the repository: ../shared/data
SHARED_DATA = Path(__file__).resolve().parents[2] / "shared" / "data"


@pytest.fixture(scope="session")
def shared_data() -> Path:
    """Path of the real reference data; skips the test when it is absent (e.g. a fresh clone on a user's machine)."""
    if not SHARED_DATA.is_dir():
        pytest.skip(f"real reference data not found at {SHARED_DATA} (expected ../shared/data next to the "
                    "repository); these tests run in CI where it is present")
    return SHARED_DATA


def pytest_collection_modifyitems(config, items):
    """Tests marked ``network`` need internet (model hubs): they run only with CLIBD_NETWORK_TESTS=1."""
    import os

    if os.environ.get("CLIBD_NETWORK_TESTS") == "1":
        return
    skip = pytest.mark.skip(reason="needs internet; run with CLIBD_NETWORK_TESTS=1")
    for item in items:
        if "network" in item.keywords:
            item.add_marker(skip)
