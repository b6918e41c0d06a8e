"""Fuzz counts for BENCHMARKS.md: random and damaged input against every reader of outside
input, each case classified as accepted (valid), a clean error (the project's own, naming
the setting or file), a traceback (any other exception) or accepted garbage (no error, but
what came back is invalid). The goal is 0 tracebacks and 0 accepted garbage.

    python -m benchmarks.fuzz --cases 2000        # prints the table; make bench renders it
"""

from __future__ import annotations

import argparse
import dataclasses
import json
import math
import tempfile
import time
from collections import Counter
from pathlib import Path

from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from benchmarks import ROOT
JSONISH = st.recursive(st.none() | st.booleans() | st.integers() | st.floats() | st.text(max_size=10),
                       lambda inner: st.lists(inner, max_size=3) | st.dictionaries(st.text(max_size=8), inner, max_size=3),
                       max_leaves=12)
# --set values: TOML of every type, values Python cannot hold, and text that is not TOML.
TOML_VALUES = ["0", "1", "-1", "2", "1.5", "1e-3", "1e400", "inf", "-inf", "nan", "true", "false", "True", "False",
               '"x"', '"."', '".."', '"a/b"', '"kd"', '"nf4"', "[1, 2]", '["smollm2-135m"]', '["nope"]', "[]",
               "{a = 1}", "{}", '"' + "9" * 5000 + '"', "9" * 5000, "", "=", "[", "{", '"unterminated']


# Text that markdown or HTML would make live, for the report renderers (eval/judge_report.inert).
MARKUP = st.sampled_from(["[", "]", "(", ")", "!", "<", ">", "`", "*", "_", "&", "|", "\\", "~", "#", "\n", "-",
                          "https://evil.example/i.png", "//evil.example", "javascript:alert(1)", "&#60;", "&lt;",
                          "<img src=x onerror=alert(1)>", "<script>", "[1]: https://evil.example", "\n\n[1]: /x"])


def live_html(page: str) -> list[str]:
    """Every element or attribute in an HTML page that would run code, fetch something or
    lead away (the reports' own images are local PNG plots, their links local files)."""
    from html.parser import HTMLParser

    found = []

    def external(url) -> bool:
        url = str(url or "").strip().lower()
        return "//" in url or ":" in url.split("/")[0]

    class Finder(HTMLParser):
        def handle_starttag(self, tag, attrs):
            a = dict(attrs)
            local_plot = tag == "img" and str(a.get("src", "")).endswith(".png") and not external(a.get("src"))
            found.extend([f"<{tag}>"] * (tag in ("script", "img", "iframe", "object") and not local_plot))
            found.extend([f"<{tag} href>"] * (tag == "a" and external(a.get("href"))))
            found.extend(f"{tag}[{k}]" for k, _ in attrs if k.startswith("on"))

    Finder().feed(page)
    return found


def cell_text(page: str) -> list[str]:
    """The text of every table cell of an HTML page, as a reader sees it."""
    from html.parser import HTMLParser

    cells: list[str] = []

    class Cells(HTMLParser):
        inside = False

        def handle_starttag(self, tag, attrs):
            if tag == "td":
                self.inside = True
                cells.append("")

        def handle_endtag(self, tag):
            self.inside = self.inside and tag != "td"

        def handle_data(self, data):
            if self.inside:
                cells[-1] += data

    Cells(convert_charrefs=True).feed(page)
    return cells


def jsonl_files(valid_line: str):
    """File contents for reader fuzzing: raw bytes, JSON values of any shape a line, and a
    valid line with one field replaced or cut (also used by the readers' tests)."""
    base = json.loads(valid_line)
    mutated = st.builds(lambda k, v: json.dumps({**base, k: v}), st.sampled_from(sorted(base)), JSONISH)
    line = st.one_of(st.just(valid_line), mutated, JSONISH.map(json.dumps), st.text(max_size=40),
                     st.builds(lambda n: valid_line[:n], st.integers(0, len(valid_line))))
    return st.one_of(st.binary(max_size=200), st.lists(line, max_size=4).map(lambda ls: "\n".join(ls).encode()))


def _run(strategy, classify, cases: int) -> Counter:
    counts: Counter = Counter()

    @given(strategy)
    @settings(max_examples=cases, deadline=None, database=None, suppress_health_check=list(HealthCheck))
    def one(x):
        try:
            counts[classify(x)] += 1
        except Exception:  # noqa: BLE001 - counting them is the point
            counts["traceback"] += 1

    one()
    return counts


def fuzz_config(cases: int) -> Counter:
    from distill import config
    from distill.settings import SettingError, check_types

    paths = ["train.steps", "train.lr", "train.lora_dropout", "generation.top_k", "generation.trust_remote_code",
             "generation.temperature", "judge.mode", "name", "seed", "teachers", "n_train", "train", "teacher",
             "teacher.smollm2-135m.distil", "teacher.smollm2-135m.revision", "sft_baseline", "train.steps.x"]
    sets = st.lists(st.tuples(st.one_of(st.sampled_from(paths), st.text(max_size=10)),
                              st.one_of(st.sampled_from(TOML_VALUES), st.text(max_size=10))).map("=".join), max_size=3)

    def classify(overrides):
        try:
            cfg = config.load(ROOT / "configs" / "tiny.toml", overrides)
        except SettingError:
            return "clean_error"
        try:
            for obj in [cfg, cfg.eval, cfg.judge] + [x for t in cfg.teachers for x in (t.generation, t.train)]:
                check_types(type(obj), {f.name: getattr(obj, f.name) for f in dataclasses.fields(obj)})
            assert cfg.name not in (".", "..") and "/" not in cfg.name
        except (SettingError, AssertionError):
            return "accepted_garbage"
        return "accepted"

    return _run(sets, classify, cases)


def fuzz_verdicts(cases: int) -> Counter:
    from eval.rubric import Rubric
    from eval.verdict import parse_verdict

    rubric = Rubric.load()
    good = {"grammar": 8, "creativity": 6, "consistency": 9, "plot": 7, "age_group": "B"}
    replies = st.one_of(st.text(max_size=300), JSONISH.map(json.dumps),
                        st.builds(lambda o: json.dumps({**good, **o}), st.dictionaries(st.sampled_from(list(good)), JSONISH,
                                                                                      max_size=3)),
                        st.builds(lambda d: "[" * d + "]" * d, st.integers(0, 5000)),
                        # prose with quotes, brackets and markdown before deep nesting or a verdict
                        st.builds(lambda pre, d: pre + '{"a": [' * d + "1" + "]}" * d,
                                  st.text(alphabet='"\\ab[]{} `*!()', max_size=12), st.integers(0, 3000)),
                        st.builds(lambda pre: pre + json.dumps(good), st.text(alphabet='"\\[]{}ab ', max_size=10)))

    def classify(reply):
        v, why = parse_verdict(reply, rubric)
        if v is None:
            return "clean_error" if why and why != "ok" else "accepted_garbage"
        ok = all(type(x) is int and rubric.low <= x <= rubric.high for x in v.scores.values())
        return "accepted" if ok and v.age_group in dict(rubric.age_groups) else "accepted_garbage"

    return _run(replies, classify, cases)


def fuzz_report_text(cases: int) -> Counter:
    """Model and judge text through the report renderer: accepted when the HTML shows exactly
    the text and nothing in it is live (a link, image, script or handler)."""
    from eval.judge_report import inert, to_html

    def classify(parts):
        text = "".join(parts)
        page = to_html(f"| fable |\n| --- |\n| {inert(text)} |\n", "t")
        shown = [" ".join(text.split()).replace("\x00", "\ufffd")]
        return "accepted" if not live_html(page) and cell_text(page) == shown else "accepted_garbage"

    return _run(st.lists(MARKUP | st.text(max_size=6), max_size=30), classify, cases)


def fuzz_urls(cases: int) -> Counter:
    """URLs with a password and a key in them through redact(): accepted when neither is left."""
    from distill.redact import redact

    secret = st.text(alphabet="abcdefghijklmnopqrstuvwxyzABCDEFGHIJKLMNOPQRSTUVWXYZ0123456789-_.~%!$'()*+,",
                     min_size=1, max_size=30)
    urls = st.builds(lambda scheme, user, pw, param, key, around: (
        around + f"{scheme}://{user}:{pw}@judge.example:8443/v1?api-version=1&{param}={key}" + around, (user, pw, param, key)),
        st.sampled_from(["http", "https", "HTTPS"]), secret, secret,
        st.sampled_from(["api-key", "api_key", "key", "token", "access_token", "sig", "Password"]), secret,
        st.sampled_from(["", " ", "\n", "error at "]))

    def classify(case):
        text, (user, pw, param, key) = case
        out = redact(text, env={})
        return "accepted" if f"{user}:{pw}@" not in out and f"{param}={key}" not in out else "accepted_garbage"

    return _run(urls, classify, cases)


def fuzz_shards(cases: int) -> Counter:
    with tempfile.TemporaryDirectory(prefix="kdfuzz-") as d:
        return _fuzz_shards(cases, Path(d))


def _fuzz_shards(cases: int, work: Path) -> Counter:
    import numpy as np

    from distill.schema import read_rows, write_table_atomic

    rng = np.random.default_rng(0)
    rows = []
    for i in range(4):
        lp = np.sort(np.log(rng.dirichlet(np.ones(50), size=12))[:, :5], axis=1)[:, ::-1]
        ids = rng.choice(49152, size=(12, 5), replace=False)
        rows.append({"prompt_id": f"p{i}", "split": "train", "character": "c", "trait": "t", "setting": "s",
                     "conflict": "x", "resolution": "r", "moral": "m", "variant": 0, "instruction": "i",
                     "sample_index": 0, "prompt_text": "p", "prompt_token_ids": [1, 2], "text": "t",
                     "token_ids": ids[:, 0].tolist(), "token_logprobs": lp[:, 0].tolist(), "topk_ids": ids.tolist(),
                     "topk_logprobs": lp.tolist(), "teacher_id": "tt", "sampling": "{}", "tokenizer_fingerprint": "f"})
    write_table_atomic(rows, work / "good" / "00000.parquet", {}, 49152)
    good = (work / "good" / "00000.parquet").read_bytes()
    expected = read_rows(work / "good")
    damage = st.tuples(st.sampled_from(["flip", "truncate", "zero"]), st.integers(0, len(good) - 1), st.integers(1, 255))

    def classify(d):
        kind, at, x = d
        bad = bytearray(good)
        if kind == "flip":
            bad[at] ^= x
        elif kind == "truncate":
            del bad[at:]
        else:
            bad[at : at + x % 64 + 1] = bytes(len(bad[at : at + x % 64 + 1]))
        folder = work / "bad"
        folder.mkdir(exist_ok=True)
        (folder / "00000.parquet").write_bytes(bytes(bad))
        try:
            back = read_rows(folder)
        except ValueError as e:
            return "clean_error" if str(e).startswith(str(folder / "00000.parquet")) else "traceback"
        return "accepted" if back == expected else "accepted_garbage"

    return _run(damage, classify, cases)


def fuzz_files(cases: int) -> dict[str, Counter]:
    with tempfile.TemporaryDirectory(prefix="kdfuzz-") as d:
        return _fuzz_files(cases, Path(d))


def _fuzz_files(cases: int, work: Path) -> dict[str, Counter]:
    from eval.comparison_inputs import load_input
    from eval.tinyfabulist import read_fables, read_tinyfabulist
    from teacher.prompts import ELEMENTS, VARIANTS, load_prompts


    def reader(valid: str, read, valid_record):
        def classify(content: bytes):
            path = work / "input.jsonl"
            path.write_bytes(content)
            try:
                records = read(path)
            except ValueError as e:
                return "clean_error" if str(path) in str(e) else "traceback"
            return "accepted" if records and all(map(valid_record, records)) else "accepted_garbage"
        return _run(jsonl_files(valid), classify, cases)

    prompt = json.dumps({"character": "fox", "trait": "kind", "setting": "forest", "conflict": "a storm",
                         "resolution": "shares", "moral": "help others", "variant": 1})
    verdict = json.dumps({"llm_name": "m", "hash": "h", "evaluation": {"grammar": 8, "creativity": 7, "age_group": "B"}})
    fable = json.dumps({"llm_name": "m", "hash": "h", "prompt": "Write.", "fable": "Once a fox..."})
    published = json.dumps({"llm_name": "m", "hash": "h", "evaluation": {
        "type": "Fable Evaluation", "grammar": 8, "creativity": 7, "moral_clarity": 8, "adherence_to_prompt": 9,
        "best_age_group": "B", "explanation": ["clear", "original"]}})
    return {
        "prompts file": reader(prompt, lambda p: load_prompts(str(p)), lambda r: all(
            isinstance(getattr(r, k), str) and getattr(r, k).strip() for k in ELEMENTS) and 0 <= r.variant < len(VARIANTS)),
        "TinyFabulist verdicts": reader(verdict, read_tinyfabulist, lambda v: v["scores"] and all(
            isinstance(s, float) and math.isfinite(s) and 0 <= s <= 10 for s in v["scores"].values())),
        "TinyFabulist verdicts, published layout (best_age_group)": reader(
            published, read_tinyfabulist, lambda v: v["scores"] and "best_age_group" not in v["scores"] and all(
                isinstance(s, float) and math.isfinite(s) and 0 <= s <= 10 for s in v["scores"].values())
            and (v["age_group"] is None or isinstance(v["age_group"], str))),
        "TinyFabulist fables": reader(fable, read_fables, lambda f: all(isinstance(f[k], str) for k in ("prompt", "fable"))),
        "comparison input": reader(json.dumps({"text": "A fox.", "prompt": "Write."}),
                                   lambda p: load_input(str(p), "jsonl", {}),
                                   lambda r: isinstance(r["text"], str) and isinstance(r["prompt"], str)),
    }


def run(cases: int = 1000) -> dict:
    t0 = time.perf_counter()
    targets = {"config and --set": fuzz_config(cases), "judge replies (parse_verdict)": fuzz_verdicts(cases),
               "shards (byte damage)": fuzz_shards(cases), **fuzz_files(cases),
               "model text in reports (inert, HTML)": fuzz_report_text(cases),
               "credentials in URLs (redact)": fuzz_urls(cases)}
    return {"cases_per_target": cases, "wall_s": round(time.perf_counter() - t0, 1),
            "targets": {name: {k: c.get(k, 0) for k in ("accepted", "clean_error", "traceback", "accepted_garbage")}
                        for name, c in targets.items()}}


def render(fz: dict) -> list[str]:
    lines = ["## Fuzzing the readers of outside input", "",
             f"{fz['cases_per_target']} generated cases per reader (hypothesis; {fz['wall_s']:.0f} s). Goal: no "
             "traceback and no accepted garbage.", "",
             "| reader | cases | accepted | clean errors | tracebacks | accepted garbage |", "| --- | --- | --- | --- | --- | --- |"]
    for name, c in fz["targets"].items():
        lines.append(f"| {name} | {sum(c.values())} | {c['accepted']} | {c['clean_error']} | {c['traceback']} | "
                     f"{c['accepted_garbage']} |")
    return lines + [""]


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(prog="python -m benchmarks.fuzz", description=__doc__.splitlines()[0])
    ap.add_argument("--cases", type=int, default=1000, help="generated cases per reader")
    args = ap.parse_args(argv)
    print("\n".join(render(run(args.cases))))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
