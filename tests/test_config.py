"""Configuration precedence (DESIGN §4): kwargs > environment > file > defaults."""

from __future__ import annotations

from pathlib import Path

import pytest

import torpor
from torpor._config import MANAGER_DEFAULTS, resolve
from torpor.errors import ConfigError


def test_defaults(tmp_path: Path) -> None:
    cfg = resolve(None, None, {}, environ={}, cwd=tmp_path)
    assert cfg.backend == "ets_like" and dict(cfg.manager) == dict(MANAGER_DEFAULTS)
    assert cfg.manager["default_timeout_ms"] == 3_600_000
    assert cfg.manager["hibernate_after_ms"] == 30_000
    assert cfg.manager["cleanup_interval_ms"] == 60_000
    assert cfg.manager["max_session_bytes"] == 1 << 20


def test_precedence_kwargs_env_file_defaults(tmp_path: Path) -> None:
    (tmp_path / "torpor.toml").write_text(
        'backend = "ets_like"\nhibernate_after_ms = 1\ndefault_timeout_ms = 2\n'
        "cleanup_interval_ms = 3\n[ets_like]\nindex_bucket_ms = 7\n"
    )
    env = {"TORPOR_HIBERNATE_AFTER_MS": "10", "TORPOR_DEFAULT_TIMEOUT_MS": "none"}
    cfg = resolve(None, None, {"hibernate_after_ms": 100}, environ=env, cwd=tmp_path)
    assert cfg.manager["hibernate_after_ms"] == 100  # kwargs beat env
    assert cfg.manager["default_timeout_ms"] is None  # env beats file
    assert cfg.manager["cleanup_interval_ms"] == 3  # file beats defaults
    assert cfg.manager["max_session_bytes"] == 1 << 20  # defaults
    assert cfg.backend_options == {"index_bucket_ms": 7}
    assert cfg.source == "torpor.toml"


def test_file_discovery_order(tmp_path: Path) -> None:
    (tmp_path / "pyproject.toml").write_text("[tool.torpor]\nhibernate_after_ms = 5\n")
    assert resolve(None, None, {}, environ={}, cwd=tmp_path).manager["hibernate_after_ms"] == 5
    (tmp_path / "torpor.toml").write_text("hibernate_after_ms = 6\n")
    assert resolve(None, None, {}, environ={}, cwd=tmp_path).manager["hibernate_after_ms"] == 6
    other = tmp_path / "other.toml"
    other.write_text("hibernate_after_ms = 7\n")
    env = {"TORPOR_CONFIG": str(other)}
    assert resolve(None, None, {}, environ=env, cwd=tmp_path).manager["hibernate_after_ms"] == 7
    explicit = resolve(None, {"hibernate_after_ms": 8}, {}, environ=env, cwd=tmp_path)
    assert explicit.manager["hibernate_after_ms"] == 8


def test_backend_selection_and_its_env_options(tmp_path: Path) -> None:
    env = {"TORPOR_BACKEND": "lmdb", "TORPOR_LMDB_PATH": "/data/s", "TORPOR_REDIS_URL": "x"}
    cfg = resolve(None, None, {}, environ=env, cwd=tmp_path)
    assert cfg.backend == "lmdb" and cfg.backend_options == {"path": "/data/s"}
    assert resolve("ets_like", None, {}, environ=env, cwd=tmp_path).backend == "ets_like"


@pytest.mark.parametrize(
    ("source", "message"),
    [
        ({"hibernate_after": 5}, "unknown option 'hibernate_after'.*hibernate_after_ms"),
        ({"max_session_bytes": "lots"}, "whole number"),
        ({"max_session_bytes": 0}, "must be > 0"),
        ({"default_timeout_ms": -5}, ">= 0"),
        ({"sweeper": "maybe"}, "true or false"),
    ],
)
def test_bad_config_is_a_clear_error(tmp_path: Path, source: dict, message: str) -> None:  # type: ignore[type-arg]
    with pytest.raises(ConfigError, match=message):
        resolve(None, source, {}, environ={}, cwd=tmp_path)


def test_bad_toml_and_missing_file(tmp_path: Path) -> None:
    bad = tmp_path / "bad.toml"
    bad.write_text("= nope")
    with pytest.raises(ConfigError, match="not valid TOML"):
        resolve(None, bad, {}, environ={}, cwd=tmp_path)
    with pytest.raises(ConfigError, match="does not exist"):
        resolve(None, tmp_path / "missing.toml", {}, environ={}, cwd=tmp_path)


def test_open_reads_the_environment(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> None:
    monkeypatch.chdir(tmp_path)
    monkeypatch.setenv("TORPOR_DEFAULT_TIMEOUT_MS", "1234")
    monkeypatch.setenv("TORPOR_SWEEPER", "false")
    with torpor.open() as mgr:
        assert mgr.create({}).timeout_ms == 1234
        assert mgr.sweeper is None
