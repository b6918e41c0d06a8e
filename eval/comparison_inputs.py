"""What the comparison reads, as one record per fable {"key", "prompt", "text", "elements",
"tokens", "seconds", "cost_per_hour"}: a finished run's teachers and students, a teacher
dataset folder (Parquet shards), TinyFabulist fables, or any JSONL/Parquet table with its
fields mapped. A malformed file ends in one ValueError naming the file and line.
"""

from __future__ import annotations

import json
from pathlib import Path

from distill import artifacts
from distill.run_folder import Generated, JudgeSummary, RunFolder, StudentFables
from distill.schema import ELEMENT_COLUMNS
from eval.tinyfabulist import tinyfabulist_elements
from teacher.prompts import heldout_prompts


def load_input(path: str, fmt: str, fields: dict[str, str]) -> list[dict]:
    """Records {"key", "prompt", "text", "elements", "tokens", "seconds", "cost_per_hour"}."""
    p = Path(path)
    if not p.exists():
        raise FileNotFoundError(f"input {path} not found")
    if p.is_dir():
        from distill.schema import read_rows

        return [pipeline_record(r, r["text"], tokens=len(r["token_ids"])) for r in read_rows(p)]
    rows = _read_table(p)
    if fmt == "tinyfabulist":
        out = []
        for n, r in enumerate(rows, 1):
            if "fable" not in r or "prompt" not in r:
                raise ValueError(f"{path}:{n}: not a TinyFabulist fable (needs 'prompt' and 'fable')")
            prompt_text = _text(r["prompt"], f"{path}:{n}", "prompt")
            out.append({"key": prompt_text, "prompt": prompt_text, "text": _text(r["fable"], f"{path}:{n}", "fable"),
                        "elements": tinyfabulist_elements(prompt_text), "tokens": r.get("llm_output_tokens"),
                        "seconds": r.get("llm_inference_time"), "cost_per_hour": r.get("host_cost_per_hour")})
        return out
    text, prompt = fields.get("text", "text"), fields.get("prompt", "prompt")
    out = []
    for n, r in enumerate(rows, 1):
        if text not in r:
            raise ValueError(f"{path}:{n}: no field '{text}' (map it with --field text=COLUMN)")
        out.append({"key": str(r.get(fields.get("id", "id"), r.get(prompt, n))),
                    "prompt": _text(r.get(prompt), f"{path}:{n}", prompt), "text": _text(r[text], f"{path}:{n}", text),
                    "elements": {c: str(r[c]) for c in ELEMENT_COLUMNS if r.get(c)},
                    "tokens": r.get(fields.get("tokens", "tokens")), "seconds": r.get(fields.get("seconds", "seconds")),
                    "cost_per_hour": None})
    return out


def pipeline_record(row: dict, text: str, tokens: int | None = None, seconds: float | None = None) -> dict:
    """A comparison record for `text` written for one prompt of a pipeline dataset (a
    teacher's own fable, or a student's on the same prompt)."""
    return {"key": row["prompt_id"], "prompt": row["instruction"], "text": text,
            "elements": {c: row[c] for c in ELEMENT_COLUMNS}, "tokens": tokens, "seconds": seconds,
            "cost_per_hour": None}


def _read_table(p: Path) -> list[dict]:
    """The records of a JSONL or Parquet file; ValueError naming the file (and line) otherwise."""
    if p.suffix == ".parquet":
        import pyarrow.parquet as pq

        try:
            return pq.read_table(p).to_pylist()
        except Exception as e:  # noqa: BLE001 - Arrow's errors for a damaged file are many
            raise ValueError(f"{p}: not a readable Parquet file ({type(e).__name__}: {str(e)[:200]})") from None
    rows = []
    try:
        with open(p, encoding="utf-8") as f:
            for n, line in enumerate(f, 1):
                if line.strip():
                    try:
                        row = json.loads(line)
                    except ValueError as e:  # JSONDecodeError, or a number Python will not hold
                        raise ValueError(f"{p}:{n}: not JSON ({getattr(e, 'msg', str(e)[:100])})") from None
                    if not isinstance(row, dict):
                        raise ValueError(f"{p}:{n}: not a JSON object ({type(row).__name__})")
                    rows.append(row)
    except (OSError, UnicodeDecodeError) as e:
        raise ValueError(f"{p}: cannot be read: {type(e).__name__}: {e}") from None
    if not rows:
        raise ValueError(f"{p}: no records in the file")
    return rows


def _text(value, where: str, name: str) -> str:
    if value is None:
        return ""
    if not isinstance(value, str):
        raise ValueError(f"{where}: field '{name}' is {type(value).__name__}, not text")
    return value


def run_inputs(run: RunFolder) -> tuple[dict[str, list[dict]], dict[str, float]]:
    """A finished run's teachers (their held-out fables) and, where judged, their students
    on the same prompts, with judge scores where they exist."""
    from distill.config import from_dict
    from distill.schema import read_rows

    cfg = from_dict(artifacts.read_json(run.config))
    inputs, scores = {}, {}
    judged = JudgeSummary.read(run.judge.summary).models if run.judge.summary.exists() else {}
    for tr in cfg.teachers:
        rows = read_rows(run.teacher(tr.teacher), split="eval")
        done = Generated.read(run.generated(tr.teacher))
        # The job's wall time, shared out by tokens: its tokens/s, engine start included.
        s_per_token = done.wall_s / done.generated_tokens if done.generated_tokens else None
        inputs[tr.teacher] = [pipeline_record(r, r["text"], tokens=len(r["token_ids"]),
                                              seconds=s_per_token * len(r["token_ids"]) if s_per_token else None)
                              for r in rows if r["sample_index"] == 0]
        if f"{tr.teacher} (teacher)" in judged:
            scores[tr.teacher] = judged[f"{tr.teacher} (teacher)"]["overall"]["mean"]
        for objective in cfg.objectives(tr):
            name = f"{tr.teacher}-{objective}"
            fables = run.judge.fables(name)
            if fables.exists():
                texts = StudentFables.read(fables).samples[0]
                prompts = heldout_prompts(rows)[: len(texts)]
                inputs[name] = [pipeline_record(r, t) for r, t in zip(prompts, texts)]
                if name in judged:
                    scores[name] = judged[name]["overall"]["mean"]
    return inputs, scores
