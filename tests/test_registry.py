"""Backend discovery through entry points (DESIGN §8)."""

from __future__ import annotations

import importlib
import sys
import warnings
from pathlib import Path

import pytest

import torpor
from tests.fake_dists import make_dist
from torpor._registry import describe_backends, load_plugin

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


def test_load_plugin_instantiates_classes_and_uses_other_callables_as_is(site: Path) -> None:
    source = """
calls = []

class Metrics:
    def __init__(self):
        calls.append("Metrics()")

class Hooks:
    def __call__(self):
        calls.append("instance()")

def factory():
    calls.append("factory()")
    return "made by factory"

callable_instance = Hooks()
plain_instance = object()
"""
    make_dist(
        site,
        "kinds_dist",
        "tp_kinds",
        source,
        {
            "torpor.plugins": {
                "a_class": "tp_kinds:Metrics",
                "a_function": "tp_kinds:factory",
                "a_callable_instance": "tp_kinds:callable_instance",
                "a_plain_instance": "tp_kinds:plain_instance",
                "a_module": "tp_kinds",
            }
        },
    )
    module = importlib.import_module("tp_kinds")
    made = load_plugin("a_class")
    assert type(made) is module.Metrics and module.calls == ["Metrics()"]
    # Any other callable is the plugin object itself and is never called.
    assert load_plugin("a_function") is module.factory
    assert load_plugin("a_callable_instance") is module.callable_instance
    assert module.calls == ["Metrics()"]
    # The entry point must name a callable.
    for name in ("a_plain_instance", "a_module"):
        with pytest.raises(torpor.BackendNotFound, match=f"{name}.*not callable"):
            load_plugin(name)
    doc = load_plugin.__doc__ or ""
    assert "instantiated" in doc and "never called" in doc and "factory taking" not in doc


def test_missing_first_party_extra_names_the_extra(monkeypatch: pytest.MonkeyPatch) -> None:
    _block_module(monkeypatch, "lmdb", unload="torpor.plugins.lmdb")
    with pytest.raises(torpor.MissingDependency, match=r"pip install 'torpor\[lmdb\]'"):
        torpor.open("lmdb", path="unused")
    with pytest.warns(RuntimeWarning, match=r"'lmdb'.*torpor\[lmdb\]") as caught:
        infos = {i.name: i for i in describe_backends()}
    assert "torpor[lmdb]" in (infos["lmdb"].error or "") and infos["ets_like"].error is None
    assert len([w for w in caught if "lmdb" in str(w.message)]) == 1


def _block_module(monkeypatch: pytest.MonkeyPatch, module: str, *, unload: str) -> None:
    """Make ``import module`` fail as if it were not installed, and forget ``unload``
    (and its submodules) so the next import runs again; all undone after the test."""
    for name in [m for m in sys.modules if m == unload or m.startswith(unload + ".")]:
        monkeypatch.delitem(sys.modules, name)
    monkeypatch.setitem(sys.modules, module, None)  # type: ignore[arg-type]


def test_missing_torpor_module_is_a_broken_install_not_a_missing_extra(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    _block_module(monkeypatch, "torpor.plugins.lmdb._backend", unload="torpor.plugins.lmdb")
    with pytest.raises(torpor.MissingDependency) as info:
        torpor.open("lmdb", path="unused")
    assert "reinstall torpor" in str(info.value) and "torpor[lmdb]" not in str(info.value)


def test_a_name_registered_twice_warns_once(site: Path) -> None:
    make_dist(site, "dist_a", "tp_a", GOOD, {"torpor.backends": {"twin": "tp_a:factory"}})
    make_dist(site, "dist_b", "tp_b", GOOD, {"torpor.backends": {"twin": "tp_b:factory"}})
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        describe_backends()
    about_twin = [str(w.message) for w in caught if "'twin'" in str(w.message)]
    assert len(about_twin) == 1, about_twin
    assert "dist_a" in about_twin[0] and "dist_b" in about_twin[0]


def test_an_open_that_fails_on_its_plugins_builds_no_backend(site: Path) -> None:
    # Everything that can fail without side effects is checked before the factory runs:
    # a backend built and then abandoned would leak (an LMDB environment, a pool).
    make_dist(
        site,
        "counting_dist",
        "tp_counting",
        "built = []\ndef factory(**options):\n    built.append(options)\n"
        "    raise AssertionError('must not be built')\n",
        {"torpor.backends": {"counting": "tp_counting:factory"}},
    )
    with pytest.raises(torpor.BackendNotFound, match="no-such-plugin"):
        torpor.open("counting", plugins=["no-such-plugin"])
    import tp_counting  # type: ignore[import-not-found]

    assert tp_counting.built == []


# -- static factory metadata (read without building a backend) ----------------------

DECLARED = """
calls = []

def factory(**options):
    calls.append(options)
    raise AssertionError("a factory's metadata must be read without calling it")

factory.capabilities = {"persistent", "NATIVE_ITERATION"}
factory.storage_options = {"path": "sessions"}

def bare(**options):
    calls.append(options)
    raise AssertionError("must not be called")
"""


def test_describe_factory_reads_metadata_without_calling_the_factory(site: Path) -> None:
    make_dist(
        site,
        "declared_dist",
        "tp_declared",
        DECLARED,
        {"torpor.backends": {"declared": "tp_declared:factory", "bare": "tp_declared:bare"}},
    )
    metadata = torpor.describe_factory(torpor.load_backend_factory("declared"))
    assert metadata == torpor.FactoryMetadata(
        frozenset({torpor.Capability.PERSISTENT, torpor.Capability.NATIVE_ITERATION}),
        {"path": "sessions"},
    )
    bare = torpor.describe_factory(torpor.load_backend_factory("bare"))
    assert bare.capabilities is None and bare.storage_options == {}
    assert importlib.import_module("tp_declared").calls == []


@pytest.mark.parametrize(
    ("capabilities", "storage_options", "problem"),
    [
        (["persistent", "teleportation"], None, "unknown capability 'teleportation'"),
        ("persistent", None, "must be a collection of torpor.Capability, not str"),
        ([42], None, "holds int 42"),
        (None, ["path"], "must map option names to default names"),
        (None, {"path": "/tmp/x"}, "must be a relative name such as 'sessions', not '/tmp/x'"),
        (None, {"path": "../up"}, "not '../up'"),
        (None, {"path": ""}, "not ''"),
        (None, {"not an option": "x"}, "storage option 'not an option' is not an option name"),
    ],
)
def test_malformed_metadata_is_a_config_error_naming_the_factory(
    capabilities: object, storage_options: object, problem: str
) -> None:
    def create_backend(**options: object) -> object:
        raise AssertionError("must not be called")

    create_backend.capabilities = capabilities  # type: ignore[attr-defined]
    create_backend.storage_options = storage_options  # type: ignore[attr-defined]
    with pytest.raises(torpor.ConfigError) as info:
        torpor.describe_factory(create_backend)
    message = str(info.value)
    assert "test_registry" in message and "create_backend" in message, message
    assert problem in message, message
    with pytest.raises(torpor.ConfigError, match="backend factory mine"):
        torpor.describe_factory(create_backend, name="mine")


def test_the_backend_factory_decorator_declares_and_checks_at_once() -> None:
    @torpor.backend_factory(
        capabilities={torpor.Capability.PERSISTENT}, storage_options={"path": "data"}
    )
    def create_backend(**options: object) -> object:
        return object()

    assert create_backend.capabilities == {torpor.Capability.PERSISTENT}  # type: ignore[attr-defined]
    assert torpor.describe_factory(create_backend).storage_options == {"path": "data"}
    with pytest.raises(torpor.ConfigError, match="unknown capability 'telepathy'"):
        torpor.backend_factory(capabilities=["telepathy"])(lambda: None)


def test_a_factory_declares_the_claims_of_each_value_of_an_option() -> None:
    P, M = torpor.Capability.PERSISTENT, torpor.Capability.MULTI_PROCESS

    @torpor.backend_factory(capabilities={P, M}, capabilities_by_option={"mode": {"ram": []}})
    def create_backend(**options: object) -> object:
        raise AssertionError("must not be called")

    assert torpor.describe_factory(create_backend).capabilities == {P, M}
    assert torpor.describe_factory(create_backend, options={"mode": "disk"}).capabilities == {P, M}
    ram = torpor.describe_factory(create_backend, options={"mode": "ram"})
    assert ram.capabilities == frozenset() and ram.variants == {"mode": {"ram": frozenset()}}
    with pytest.raises(torpor.ConfigError, match="unknown capability 'telepathy'"):
        torpor.backend_factory(capabilities_by_option={"mode": {"x": ["telepathy"]}})(lambda: None)
    create_backend.capabilities_by_option = ["not", "a", "mapping"]  # type: ignore[attr-defined]
    with pytest.raises(torpor.ConfigError, match="capabilities_by_option must map"):
        torpor.describe_factory(create_backend)


@pytest.mark.parametrize(
    ("name", "options", "storage"),
    [
        ("ets_like", {}, {}),
        ("lmdb", {"path": "env"}, {"path": "sessions"}),
        ("mnesia_like", {"path": "db"}, {"path": "sessions.sqlite3"}),
        ("mnesia_like", {"path": "db", "storage": "disc_only"}, {"path": "sessions.sqlite3"}),
        ("mnesia_like", {"path": "db", "storage": "ram"}, {"path": "sessions.sqlite3"}),
    ],
)
def test_first_party_factories_declare_what_their_backends_claim(
    name: str, options: dict[str, str], storage: dict[str, str], tmp_path: Path
) -> None:
    if name == "lmdb":
        pytest.importorskip("lmdb")
    metadata = torpor.describe_factory(torpor.load_backend_factory(name), options=options)
    opened = {k: str(tmp_path / v) if k == "path" else v for k, v in options.items()}
    with torpor.open(name, sweeper=False, **opened) as mgr:
        assert metadata.capabilities == mgr.capabilities
    assert metadata.storage_options == storage
