import jax
import pytest


@pytest.fixture
def x64():
    """Run a physics test in float64, scoped to the test."""
    with jax.enable_x64(True):
        yield
