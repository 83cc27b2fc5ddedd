"""Fixtures for the analysis tests."""

from __future__ import annotations

import matplotlib.pyplot as plt
import pytest


@pytest.fixture(autouse=True)
def close_figures():
    """Closes every matplotlib figure a test left open."""
    yield
    plt.close("all")
