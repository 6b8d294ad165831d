import dataclasses
import os
import tempfile

import pytest
from tiny import BASELINES, TINY

# Tests compile into a throwaway persistent cache so that repeated shapes across tests and
# subprocesses compile once, without touching the user's cache.
_CACHE = tempfile.mkdtemp(prefix="crl-test-jax-cache-")
os.environ.setdefault("CRL_TEST_COMPILE_CACHE", _CACHE)
# Compilation is most of the suite's time on a CPU: runs compile with XLA's cheapest settings
# (crl.train.FAST_COMPILE_OPTIONS), here and in the subprocesses tests start, except where a
# test asks for the ``optimised_compile`` fixture. CRL_FAST_COMPILE=0 runs everything optimised.
os.environ.setdefault("CRL_FAST_COMPILE", "1")


@pytest.fixture(scope="session")
def compile_cache() -> str:
    return os.environ["CRL_TEST_COMPILE_CACHE"]


@pytest.fixture
def optimised_compile(monkeypatch):
    """XLA's default optimisations for this test's compilations: for learning runs, which
    execution dominates (several times slower unoptimised), and for values recorded under
    them to float32 precision."""
    monkeypatch.setenv("CRL_FAST_COMPILE", "0")


@pytest.fixture(scope="session", autouse=True)
def _jax_cache(compile_cache):
    from crl.train import enable_compile_cache

    enable_compile_cache(compile_cache)


@pytest.fixture(scope="session")
def tiny_run(tmp_path_factory, compile_cache):
    """TINY trained for its 2 epochs in one go: (config, final state, history, run path)."""
    from crl import runs
    from crl.config import validate
    from crl.train import train

    config = validate(dataclasses.replace(TINY, run_dir=str(tmp_path_factory.mktemp("runs")),
                                          run_name="tiny", compile_cache=compile_cache))
    state, history = train(config, log=lambda _: None)
    return config, state, history, runs.run_path(config)


@pytest.fixture(scope="session")
def baseline_runs(tmp_path_factory, compile_cache):
    """``get(name)``: the baseline ``name`` of tests/tiny.py:BASELINES trained on TINY's 2
    epochs, trained once per session: (config, final state, history, run path)."""
    from crl import runs
    from crl.config import validate
    from crl.train import train

    trained = {}

    def get(name: str):
        if name not in trained:
            config = validate(dataclasses.replace(
                TINY, **BASELINES[name], run_dir=str(tmp_path_factory.mktemp(name)),
                run_name=name, compile_cache=compile_cache, render=False))
            state, history = train(config, log=lambda _: None)
            trained[name] = config, state, history, runs.run_path(config)
        return trained[name]

    return get


# The modules that take longest, first (a worker runs a module whole, --dist loadscope): a long
# module started last would keep one worker busy while the other idles.
LONGEST_FIRST = ("test_agents.py", "test_train.py", "test_env_training.py", "test_distributed.py",
                 "test_sweep.py", "test_seeds.py", "test_runs.py", "test_faults.py",
                 "test_env_suite.py")


def pytest_collection_modifyitems(items):
    def rank(item) -> int:
        name = item.path.name
        return LONGEST_FIRST.index(name) if name in LONGEST_FIRST else len(LONGEST_FIRST)

    items.sort(key=rank)  # stable: tests keep their order within a module
