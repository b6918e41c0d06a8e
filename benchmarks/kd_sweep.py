"""Why KD wins or loses against SFT: one finished run's teacher data, the student trained again
under varied settings, each variant's held-out KL and CE measured:

    python -m benchmarks.kd_sweep --run runs/default --teacher qwen2.5-coder-1.5b \
        --variant lr=1e-3 --variant kd_weight=1.0 --variant objective=sft,lr=1e-3

Each variant is `key=value[,key=value]` over [train] settings (distill.train.TrainConfig),
applied on top of the run's own. Results go to <run>/sweep/<variant>.json, one file per
variant, so a killed sweep keeps what it finished; `make bench` renders them.
"""

from __future__ import annotations

import argparse
import dataclasses
import json
import tempfile
import time
from pathlib import Path

from distill import artifacts
from distill.run_folder import RunFolder


def run_teacher(run: RunFolder, teacher: str):
    from distill.config import from_dict

    cfg = from_dict(artifacts.read_json(run.config))
    for tr in cfg.teachers:
        if tr.teacher == teacher:
            return tr
    raise ValueError(f"{run.root} has no teacher {teacher!r} (it has {', '.join(t.teacher for t in cfg.teachers)})")


def parse_variant(text: str, base) -> tuple[str, object]:
    """'lr=1e-3,kd_weight=1.0' -> (name, TrainConfig with those settings)."""
    changes = {}
    fields = {f.name: f for f in dataclasses.fields(base)}
    for part in filter(None, text.split(",")):
        key, sep, value = part.partition("=")
        if not sep or key not in fields:
            raise ValueError(f"variant {text!r}: {part!r} is not key=value over a [train] setting")
        kind = type(getattr(base, key))
        try:
            changes[key] = value if kind is str else kind(float(value)) if kind is int else kind(value)
        except ValueError:
            raise ValueError(f"variant {text!r}: {key}={value!r} is not a {kind.__name__}") from None
    return text or "run", dataclasses.replace(base, **changes)


def measure(run: RunFolder, teacher: str, name: str, tcfg) -> dict:
    from distill.data import pad_id
    from student.initial import build_initial_student
    from distill.schema import read_rows
    from distill.train import train
    from eval.logit_metrics import heldout_metrics
    from student.build import apply_lora

    tr = dataclasses.replace(run_teacher(run, teacher), train=tcfg)
    rows = read_rows(run.teacher(teacher), split="train")
    heldout = read_rows(run.teacher(teacher), split="eval")
    model, tok = build_initial_student(tr)
    model = apply_lora(model, tcfg.lora_r, tcfg.lora_alpha, tcfg.lora_dropout)
    t0 = time.perf_counter()
    with tempfile.TemporaryDirectory(dir=run.root) as d:
        result = train(model, tok, rows, Path(d), dataclasses.replace(tcfg, save_steps=10**6))
    after = heldout_metrics(model, pad_id(tok), heldout, tcfg.max_len)
    return {"variant": name, "settings": dataclasses.asdict(tcfg), "train_s": time.perf_counter() - t0,
            "final_loss": result["final_loss"], "kl": after["kl"], "ce": after["ce"], "per_fable": after["per_fable"]}


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--run", required=True, type=Path)
    ap.add_argument("--teacher", required=True)
    ap.add_argument("--variant", action="append", default=[], help="key=value[,key=value] over [train]")
    args = ap.parse_args(argv)
    run = RunFolder(args.run)
    base = run_teacher(run, args.teacher).train
    out = run.sweep
    out.mkdir(exist_ok=True)
    for text in args.variant or [""]:
        name, tcfg = parse_variant(text, base)
        f = out / f"{name.replace('=', '-').replace(',', '_')}.json"
        if f.exists():
            print(f"{name}: done before")
            continue
        r = measure(run, args.teacher, name, tcfg)
        artifacts.write_json_atomic(f, r)
        print(json.dumps({k: r[k] for k in ("variant", "kl", "ce", "final_loss", "train_s")}))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
