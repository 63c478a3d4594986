"""Fixtures shared by the test modules (the session settings are in the top-level conftest.py)."""

import pytest

from csigen import fid


@pytest.fixture(scope="session")
def weights(tmp_path_factory):
    """A randomly initialised Inception weights file: torch-fidelity's real code path, no download.

    Values computed with it are not FIDs (csigen.fid marks them so).
    """
    return fid.make_offline_inception_weights(tmp_path_factory.mktemp("inception") / "random-inception.pth")


@pytest.fixture(autouse=True)
def _no_env_weights(monkeypatch):
    """No test picks up a user's ``$CSIGEN_FID_WEIGHTS``."""
    monkeypatch.delenv(fid.ENV_WEIGHTS, raising=False)
