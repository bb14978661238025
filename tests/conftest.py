"""Test configuration shared by the whole suite.

The virtual CPU device count is fixed here, once, before any JAX backend starts (DESIGN.md §6); compiled programs
are cached on disk between runs. Tests that need float64 use the ``x64`` fixture (``jax.enable_x64`` as a context
manager), never the global flag, so float32 behaviour stays what users get.
"""

import os
import pathlib

import jax
import pytest

NUM_VIRTUAL_DEVICES = 8

jax.config.update("jax_num_cpu_devices", NUM_VIRTUAL_DEVICES)
_cache = pathlib.Path(os.environ.get("MULAN_PPL_JAX_CACHE", pathlib.Path(__file__).parent.parent / ".jax_cache"))
jax.config.update("jax_compilation_cache_dir", str(_cache))
jax.config.update("jax_persistent_cache_min_compile_time_secs", 0.5)


@pytest.fixture
def x64():
    """Runs the test body with 64-bit JAX types enabled."""
    with jax.enable_x64(True):
        yield
