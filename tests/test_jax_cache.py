"""JAX's persistent compilation cache as nft-fw's commands turn it on (nft_fw/cli/common.py):
where it goes, that it can be switched off, and that a compiled program lands in it."""

from __future__ import annotations

import os
import stat
from collections.abc import Iterator
from pathlib import Path

import jax
import jax.numpy as jnp
import pytest
from jax.experimental.compilation_cache import compilation_cache

from nft_fw.cli.common import JAX_CACHE_ENV, enable_jax_cache


@pytest.fixture
def restored(monkeypatch: pytest.MonkeyPatch) -> Iterator[None]:
    """The test run's own cache settings back afterwards (enable_jax_cache sets the variable
    for the processes a command starts; monkeypatch restores it)."""
    monkeypatch.setenv(JAX_CACHE_ENV, "")
    monkeypatch.delenv("JAX_COMPILATION_CACHE_DIR", raising=False)
    before = jax.config.jax_compilation_cache_dir
    yield
    jax.config.update("jax_compilation_cache_dir", before)
    compilation_cache.reset_cache()


def test_off_leaves_jax_alone(restored: None, monkeypatch: pytest.MonkeyPatch) -> None:
    before = jax.config.jax_compilation_cache_dir
    monkeypatch.setenv(JAX_CACHE_ENV, "off")
    assert enable_jax_cache() is None
    assert jax.config.jax_compilation_cache_dir == before


def test_the_default_cache_is_private_and_receives_compiled_programs(
    restored: None, monkeypatch: pytest.MonkeyPatch, tmp_path: Path
) -> None:
    monkeypatch.setenv("XDG_CACHE_HOME", str(tmp_path / "xdg"))
    monkeypatch.setenv("HOME", str(tmp_path / "home"))
    path = enable_jax_cache()
    assert path == tmp_path / "xdg" / "nft-fw" / "jax"
    assert stat.S_IMODE(path.stat().st_mode) == 0o700  # it holds executable code
    assert jax.config.jax_compilation_cache_dir == str(path)
    assert os.environ[JAX_CACHE_ENV] == str(path)  # inherited by the workers it starts
    compilation_cache.reset_cache()  # this process's cache was opened on the run's directory

    @jax.jit
    def shifted(x: jax.Array) -> jax.Array:
        return jnp.sin(x) * 1.2345 + 0.5432

    shifted(jnp.arange(7.0)).block_until_ready()
    assert any(path.iterdir()), "no compiled program was written to the cache"


def test_jax_s_own_variable_is_used_when_nft_fw_s_is_unset(
    restored: None, monkeypatch: pytest.MonkeyPatch, tmp_path: Path
) -> None:
    monkeypatch.setenv("JAX_COMPILATION_CACHE_DIR", str(tmp_path / "site-cache"))
    assert enable_jax_cache() == tmp_path / "site-cache"
