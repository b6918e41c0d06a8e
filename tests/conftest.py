import os
import subprocess
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parent.parent
SHARED = ROOT.parent / "shared"

# 1 GiB of KV cache per CPU engine (vLLM's own variable; the judge service and the served
# teachers of these tests read it): two test files run at once, each may hold two engines,
# and at vLLM's 2 GiB apiece the machine's 24 GiB ran out (seen in CI: Ray's memory monitor
# killed a teacher's engine). The tiny configs set generation.kv_cache_gib = 1 to match.
os.environ.setdefault("VLLM_CPU_KVCACHE_SPACE", "1")


def have_models() -> bool:
    from teacher.registry import EMBEDDED, MODELS_DIR

    return all((MODELS_DIR / t / "CHECKED").exists() for t in EMBEDDED)


needs_models = pytest.mark.skipif(not have_models(), reason="embedded teachers not built; run `make models`")
needs_shared = pytest.mark.skipif(not (SHARED / "data" / "tinyfabulist").exists(), reason="../shared is absent")

# A synchronous vllm.LLM with its engine core in the calling process: on CPU the default
# spawns an engine-core and a worker process, each re-importing vllm and torch (measured:
# 32 s to start a tiny model that way, 4 s in-process). The model loader is the same.
VLLM_IN_PROCESS = {"VLLM_ENABLE_V1_MULTIPROCESSING": "0"}


def make_env(env: dict | None = None) -> dict:
    """The environment for a `make` a test runs, without the outer make's: under `make test
    PYTEST_ARGS=...` (as the Makefile invites) make passes its command-line variables down
    twice, in MAKEFLAGS and as variables of their own, and every make a test starts would
    take them for its own settings."""
    import re

    env = dict(os.environ if env is None else env)
    overrides = re.split(r"(?:^|\s)--\s", env.get("MAKEFLAGS", ""), maxsplit=1)[1:]  # the part after " -- "
    outer = re.findall(r"(?:^|\s)([A-Za-z_][A-Za-z0-9_]*)=", overrides[0]) if overrides else []
    drop = {"MAKEFLAGS", "MFLAGS", "MAKELEVEL", "MAKEOVERRIDES", *outer}
    return {k: v for k, v in env.items() if k not in drop}


def run_make(*args: str, timeout: float = 60, env: dict | None = None) -> subprocess.CompletedProcess:
    """`make ARGS...` in the repository, in make_env(env), its output captured."""
    return subprocess.run(["make", *args], cwd=ROOT, env=make_env(env), capture_output=True, text=True, timeout=timeout)


def read_or_named_error(read, path, prefix: str = ""):
    """For reader fuzzing: what `read(path)` returns, or None after checking that it ended in
    one ValueError, on one line, opening with `prefix` (default: the path)."""
    try:
        return read(path)
    except ValueError as e:
        assert str(e).startswith(prefix or str(path)) and "\n" not in str(e), str(e)
        return None


@pytest.fixture(scope="session")
def ray_head(tmp_path_factory):
    """One Ray head for the session, started by `make ray-up` (tests/ray_head.py): the tiny
    pipeline run is submitted to it as a job, and the Makefile's test checks its ports."""
    if not have_models():
        pytest.skip("embedded teachers not built; run `make models`")
    from tests.ray_head import make_ray_up

    with make_ray_up(ROOT, tmp_path_factory.mktemp("ray-head")) as head:
        yield head


# Test files that hold two or more vLLM engines at once: each engine on CPU is 2-4 GiB
# beside the 1-2 GiB of the Ray actor that drives it. Two such files side by side on the
# two xdist workers took the machine to 21-23 of its 24 GiB, and Ray's memory monitor
# killed an engine (seen in CI). Scheduled as one unit, they run one after another; every
# other file is its own unit, as --dist loadfile does. The make targets run the end-to-end
# tests in one process, without xdist; this keeps `pytest -n 2` over every file, typed by
# hand, from doing what CI saw. (A scheduler, not xdist_group marks:
# xdist 3.8's loadgroup renames node ids through an attribute pytest 9 no longer reads.)
ENGINE_HEAVY = ("tests/distill/test_pipeline_e2e.py", "tests/ray_cluster/test_serve.py")


def pytest_xdist_make_scheduler(config, log):
    from xdist.scheduler import LoadScopeScheduling

    class EngineHeavyTogether(LoadScopeScheduling):
        def _split_scope(self, nodeid: str) -> str:
            path = nodeid.split("::", 1)[0]
            return "engine-heavy" if path in ENGINE_HEAVY else path

    return EngineHeavyTogether(config, log)
