import os
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parent.parent
SHARED = ROOT.parent / "shared"


def have_models() -> bool:
    from teacher.registry import EMBEDDED, MODELS_DIR

    return all((MODELS_DIR / t / "CHECKED").exists() for t in EMBEDDED)


needs_models = pytest.mark.skipif(not have_models(), reason="embedded teachers not built; run `make models`")
needs_shared = pytest.mark.skipif(not (SHARED / "data" / "tinyfabulist").exists(), reason="../shared is absent")
