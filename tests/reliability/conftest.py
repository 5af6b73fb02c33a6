"""Fixtures of the reliability tests (helpers live in reliability_helpers.py)."""

from __future__ import annotations

from pathlib import Path

import pytest

from tests.reliability.reliability_helpers import two_rows


@pytest.fixture
def two_spec(make_spec) -> Path:
    """quick (1 epoch) then slow (4 epochs)."""
    return two_rows(make_spec, slow_first=False)
