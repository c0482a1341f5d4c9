import pytest

from torpor.conformance import Target

# The kit's pytest plugin, opt-in.
pytest_plugins = ["torpor.conformance.plugin"]


@pytest.fixture(scope="session")
def torpor_target() -> Target:
    # {storage} becomes a fresh folder per test, and the same one when a test reopens.
    return Target(backend="dirstore", options={"path": "{storage}/sessions"})
