import pytest

from torpor.conformance import Target

# The kit's pytest plugin, opt-in.
pytest_plugins = ["torpor.conformance.plugin"]


@pytest.fixture(scope="session")
def torpor_target() -> Target:
    # dirstore declares `path` as a storage option (create_backend.storage_options), so
    # each test gets its own folder, {storage}/sessions, and the same one when it
    # reopens; no options needed.
    return Target(backend="dirstore")
