import os
import tempfile

import pytest

# Tests compile into a throwaway persistent cache so that repeated shapes across tests and
# subprocesses compile once, without touching the user's cache.
_CACHE = tempfile.mkdtemp(prefix="crl-test-jax-cache-")
os.environ.setdefault("CRL_TEST_COMPILE_CACHE", _CACHE)


@pytest.fixture(scope="session")
def compile_cache() -> str:
    return os.environ["CRL_TEST_COMPILE_CACHE"]


@pytest.fixture(scope="session", autouse=True)
def _jax_cache(compile_cache):
    from crl.train import enable_compile_cache

    enable_compile_cache(compile_cache)
