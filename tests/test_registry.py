"""Backend discovery through entry points (DESIGN §8)."""

from __future__ import annotations

import sys
import warnings
from pathlib import Path

import pytest

import torpor
from tests.fake_dists import make_dist
from torpor._registry import describe_backends

GOOD = """
from tests.minimal_backend import MinimalBackend

def factory(**options):
    torpor_check = __import__("torpor").check_backend_options
    torpor_check("thirdparty", options, {"flavour"})
    backend = MinimalBackend()
    backend.flavour = options.get("flavour")
    return backend
"""


@pytest.fixture
def site(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    monkeypatch.syspath_prepend(str(tmp_path))
    return tmp_path


@pytest.fixture
def thirdparty(site: Path) -> Path:
    """A well-behaved third-party backend named ``thirdparty``."""
    make_dist(
        site,
        "thirdparty_dist",
        "tp_good",
        GOOD,
        {"torpor.backends": {"thirdparty": "tp_good:factory"}},
    )
    return site


def test_third_party_backend_by_name(thirdparty: Path) -> None:
    with torpor.open("thirdparty", flavour="mint", sweeper=False) as mgr:
        s = mgr.create({"a": 1})
        assert mgr.get(s.id).data == {"a": 1}  # type: ignore[union-attr]
        assert mgr.backend_name == "thirdparty"
    with pytest.raises(torpor.ConfigError, match="valid: flavour"):
        torpor.open("thirdparty", colour="red")


def test_unknown_name_lists_installed(thirdparty: Path) -> None:
    with pytest.raises(torpor.BackendNotFound) as info:
        torpor.open("nosuch")
    assert (
        "nosuch" in str(info.value)
        and "ets_like" in str(info.value)
        and "thirdparty" in str(info.value)
    )


def test_broken_plugin_warns_and_does_not_break_the_registry(site: Path) -> None:
    make_dist(
        site,
        "broken_dist",
        "tp_broken",
        "raise RuntimeError('kaputt')\n",
        {"torpor.backends": {"broken": "tp_broken:factory"}},
    )
    with pytest.warns(RuntimeWarning, match="'broken'.*kaputt"):
        infos = {i.name: i for i in describe_backends()}
    assert infos["ets_like"].error is None and infos["broken"].error is not None
    # Lazy: opening another backend never imports the broken one.
    with torpor.open(sweeper=False) as mgr:
        assert mgr.create({}).version == 1
    assert "tp_broken" not in sys.modules
    with pytest.raises(torpor.BackendNotFound, match=r"broken.*failed to load.*kaputt"):
        torpor.open("broken")


def test_missing_dependency_names_the_fix(site: Path) -> None:
    make_dist(
        site,
        "needy_dist",
        "tp_needy",
        "import not_installed_engine_xyz\n",
        {"torpor.backends": {"needy": "tp_needy:factory"}},
    )
    with pytest.raises(torpor.MissingDependency) as info:
        torpor.open("needy")
    assert "not_installed_engine_xyz" in str(info.value) and "needy_dist" in str(info.value)
    assert isinstance(info.value, ImportError)


def test_two_plugins_with_one_name_is_an_error(site: Path) -> None:
    make_dist(site, "dist_a", "tp_a", GOOD, {"torpor.backends": {"twin": "tp_a:factory"}})
    make_dist(site, "dist_b", "tp_b", GOOD, {"torpor.backends": {"twin": "tp_b:factory"}})
    with pytest.raises(torpor.ConfigError, match=r"more than one distribution.*dist_[ab]"):
        torpor.open("twin")
    with warnings.catch_warnings(record=True):
        warnings.simplefilter("always")
        twins = [i for i in describe_backends() if i.name == "twin"]
    assert len(twins) == 2 and all(i.error for i in twins)


def test_ets_like_registers_like_a_third_party() -> None:
    import importlib.metadata as md

    eps = [ep for ep in md.entry_points(group="torpor.backends") if ep.name == "ets_like"]
    assert eps and eps[0].value == "torpor.plugins.ets_like:create_backend"


def test_extension_plugin_by_name(site: Path) -> None:
    source = """
import torpor

class Counter:
    calls = 0

    @torpor.hookimpl(wrapper=True)
    def torpor_fetch(self, session_id):
        Counter.calls += 1
        return (yield)
"""
    make_dist(
        site,
        "counter_dist",
        "tp_counter",
        source,
        {"torpor.plugins": {"counter": "tp_counter:Counter"}},
    )
    with torpor.open(plugins=["counter"], sweeper=False) as mgr:
        s = mgr.create({})
        mgr.peek(s.id)
        mgr.peek(s.id)
    assert sys.modules["tp_counter"].Counter.calls >= 2
    with pytest.raises(torpor.BackendNotFound, match="no plugin named 'nope'"):
        torpor.open(plugins=["nope"])
