"""The LLM judge: scores fables through the `openai` client against a rubric
(eval/rubric.py), reads each reply as a verdict (eval/verdict.py) and caches it
(eval/verdict_cache.py).

Its command line is the protocol's (`python -m eval.protocol`).

Any OpenAI-compatible endpoint can judge (OPENAI_BASE_URL / OPENAI_API_KEY: GPT-4o, a
remote vLLM server, `make serve`). Every verdict records the judge's model and settings and
the rubric's hash; verdicts are cached on (judge, rubric, prompt, fable), so a rerun pays
only for new fables.
"""

from __future__ import annotations

import json
from dataclasses import asdict

from distill.redact import redact
from eval.checklist import age_expected, age_letter, age_question, criterion_scores, p_yes, questions_for
from eval.checklist import messages as checklist_messages
from eval import pairwise
from eval.likelihood import (GO_ON, LIKELIHOOD_CRITERIA, METHOD, likelihood_problem, likelihood_scores, per_token,
                              plot_loss, read_nats, with_close)
from eval.rubric import JUDGE_MODES, Rubric
from eval.verdict import clip, ensemble_verdict, gated, parse_verdict, weighted_scores
from eval.verdict_cache import VerdictCache
from teacher.prompts import ELEMENTS


class Judge:
    """Scores fables through an OpenAI-compatible chat endpoint.

    Transient errors (connection, 429, 5xx) are retried with exponential backoff by the
    `openai` client (max_retries); what still fails is returned as a failure record and
    not cached, so the next run asks again."""

    def __init__(self, client, model: str, rubric: Rubric, temperature: float = 0.0, max_tokens: int = 256,
                 structured: bool = True, cache: VerdictCache | None = None, mode: str = "form",
                 max_text_loss: float = 4.5, fluency_gate: bool = False):
        if mode not in JUDGE_MODES:
            raise ValueError(f"judge mode {mode!r} is not one of {', '.join(JUDGE_MODES)}")
        if mode in ("geval", "ensemble") and rubric.high > 9:
            raise ValueError(f"judge mode '{mode}' needs a scale of single digits; rubric {rubric.name} goes to "
                             f"{rubric.high} (use eval/rubrics/fable-5.toml)")
        if mode == "checklist" and not rubric.checklist:
            raise ValueError(f"judge mode 'checklist' needs a rubric with [[checklist]] questions; {rubric.name} has none "
                             "(use eval/rubrics/fable-checklist.toml)")
        if mode == "likelihood" and (problem := likelihood_problem(rubric)):
            raise ValueError(problem)
        if mode == "pairwise" and not rubric.pair:
            raise ValueError(f"judge mode 'pairwise' needs a rubric with template.pair; {rubric.name} has none "
                             "(use eval/rubrics/fable-pairwise.toml)")
        self.client, self.model, self.rubric, self.cache = client, model, rubric, cache
        self.temperature, self.max_tokens, self.structured, self.mode = temperature, max_tokens, structured, mode
        self.max_text_loss = max_text_loss
        # ensemble always has the fluency criterion and the readability gate; checklist and pairwise may;
        # likelihood may have the gate, not the criterion (its grammar is that same loss)
        self.gated = mode == "ensemble" or (fluency_gate and mode in ("checklist", "pairwise", "likelihood"))

    def settings(self) -> dict:
        """What is recorded with every verdict (the endpoint's address with any credential in
        it masked, never its key)."""
        return {"model": self.model, "base_url": redact(str(self.client.base_url)), "temperature": self.temperature,
                "max_tokens": self.max_tokens, "structured": self.structured, "rubric": self.rubric.name,
                "rubric_digest": self.rubric.digest, "mode": self.mode,
                **({"method": METHOD} if self.mode == "likelihood" else {}),
                **({"max_text_loss": self.max_text_loss} if self.gated else {}),
                **({"fluency_gate": True} if self.gated and self.mode != "ensemble" else {})}

    def _key(self, prompt: str, fable: str, elements: dict | None = None) -> str:
        if self.mode == "checklist":  # its questions name the elements: they are part of what is judged
            prompt = prompt + "\n" + json.dumps(_known(elements), sort_keys=True)
        if self.mode == "pairwise":  # the fable is judged against its reference
            prompt = prompt + "\n" + json.dumps({"reference": (elements or {}).get("reference")})
        return VerdictCache.key(self.settings(), prompt, fable)

    def cached(self, prompt: str, fable: str, elements: dict | None = None) -> dict | None:
        """The cached verdict record for this fable, or None: no request is made."""
        hit = self.cache.get(self._key(prompt, fable, elements)) if self.cache is not None else None
        return {**hit, "cached": True} if hit is not None else None

    def judge(self, prompt: str, fable: str, elements: dict | None = None) -> dict:
        """A verdict record for one fable. `elements`: the prompt's elements where known
        (character, trait, ...), which the checklist's questions name."""
        if (hit := self.cached(prompt, fable, elements)) is not None:
            return hit
        settings = self.settings()
        if self.mode in ("checklist", "pairwise", "likelihood"):
            record = (self._checklist(prompt, fable, _known(elements), settings) if self.mode == "checklist"
                      else self._likelihood(prompt, fable, settings) if self.mode == "likelihood"
                      else self._pairwise(prompt, fable, (elements or {}).get("reference"), settings))
            if record["verdict"] and self.cache is not None:
                self.cache.put(self._key(prompt, fable, elements), record)
            return {**record, "cached": False}
        try:
            raw, tokens = self._ask(prompt, fable)
        except Exception as e:  # the openai client already retried transient errors
            return {"verdict": None, "reason": f"request failed: {type(e).__name__}: {clip(str(e))}", "raw": None,
                    "judge": settings, "cached": False}
        verdict, reason = parse_verdict(raw, self.rubric)
        record = {"verdict": asdict(verdict) if verdict else None, "reason": reason,
                  "raw": redact(raw) if isinstance(raw, str) else raw, "judge": settings}
        if verdict and self.mode in ("geval", "ensemble"):
            weighted = weighted_scores(tokens or [], self.rubric)
            if weighted is None:
                record.update(verdict=None, reason="no probabilities over the scale at a score token (logprobs)")
            else:  # the written integers are kept beside the weighted scores
                record["verdict"] = {**record["verdict"], "scores": weighted, "written": verdict.scores}
        if record["verdict"] and self.gated:
            record = self._gate(record, fable)
            if record.pop("transient", False):  # a failed request: asked again next run, not cached
                return record
        if self.cache is not None:
            self.cache.put(self._key(prompt, fable), record)
        return {**record, "cached": False}

    def _gate(self, record: dict, fable: str) -> dict:
        """The fluency criterion (the judge's own nats/token on the fable) and the readability
        gate added to a verdict (eval/verdict.py:ensemble_verdict)."""
        try:
            loss = self._text_loss(fable)
        except Exception as e:  # the openai client already retried transient errors
            return {**record, "verdict": None, "reason": f"text loss request failed: {type(e).__name__}", "cached": False,
                    "transient": True}
        if loss is None:
            return {**record, "verdict": None, "reason": "no prompt logprobs for the fable's text loss"}
        return {**record, "verdict": ensemble_verdict(record["verdict"], loss, self.rubric, self.max_text_loss)}

    def _checklist(self, prompt: str, fable: str, elements: dict, settings: dict) -> dict:
        """Every checklist question and the age question, one request each (answer token
        only, with its alternatives' logprobs); a question with no yes/no among them, or a
        failed request, fails the verdict with its reason."""
        try:
            answers, missing = self._yes_answers(prompt, fable, questions_for(self.rubric, elements))
            if missing:
                return self._failed(settings, missing)
        except Exception as e:  # the openai client already retried transient errors
            return self._failed(settings, f"request failed: {type(e).__name__}: {clip(str(e))}")
        return self._with_age(prompt, fable, settings, "checklist", {
            "scores": criterion_scores(answers, self.rubric),
            "answers": [{"criterion": c, "p_yes": round(p, 4)} for c, p, _ in answers]})

    def _likelihood(self, prompt: str, fable: str, settings: dict) -> dict:
        """Grammar, creativity, consistency and plot from the judge's nats on the fable alone
        and after its prompt (eval/likelihood.py), any other criterion from its checklist
        questions, then the age question; past the readability gate every criterion gets
        the floor where the gate is on. A failed request or a missing logprob fails the
        verdict with its reason."""
        try:
            alone = self._nats(fable)
            head = prompt.strip() + "\n\n"
            text, close_at = with_close(fable)
            after = self._nats(head + text, start=len(head), end=len(head) + close_at)
            go_on = self._nats(head + text[:close_at] + GO_ON, start=len(head), end=len(head) + close_at)
            if alone is None or after is None or go_on is None:
                return self._failed(settings, "no prompt logprobs for the fable's likelihoods (the endpoint needs "
                                              "completions with echo and logprobs)")
            answers, missing = self._yes_answers(prompt, fable, [q for q in questions_for(self.rubric, {})
                                                                 if q[0] not in LIKELIHOOD_CRITERIA])
            if missing:
                return self._failed(settings, missing)
        except Exception as e:  # the openai client already retried transient errors
            return self._failed(settings, f"request failed: {type(e).__name__}: {clip(str(e))}")
        u, p = per_token(alone), per_token(after)
        plot = plot_loss(p, after["close"], go_on["close"])
        scores = {**criterion_scores(answers, self.rubric),
                  **likelihood_scores(u, p, after["after"], after["before"], self.rubric, self.max_text_loss, plot)}
        verdict = {"scores": {c: scores[c] for c in self.rubric.names}, "text_loss": u, "loss_after_prompt": p,
                   "close_nats": after["close"], "go_on_nats": go_on["close"], "plot_loss": plot,
                   "fable_nats": after["after"], "prompt_nats": after["before"],
                   "answers": [{"criterion": c, "p_yes": round(a, 4)} for c, a, _ in answers]}
        if self.gated:
            verdict = gated(verdict, u, self.rubric, self.max_text_loss)
        return self._with_age(prompt, fable, settings, "likelihood", verdict)

    def _yes_answers(self, prompt: str, fable: str, questions) -> tuple[list[tuple[str, float, float]], str | None]:
        """(criterion, P(yes), weight) for each question, one request each, and None; or the
        answers so far and why the first question with no yes or no among its top tokens failed."""
        answers = []
        for criterion, question, weight in questions:
            p = p_yes(self._answer_token(prompt, fable, f"{question}\n{self.rubric.yes_no}"))
            if p is None:
                return answers, f"no yes or no among the answer's top tokens to {clip(question, 60)!r}"
            answers.append((criterion, p, weight))
        return answers, None

    def _pairwise(self, prompt: str, fable: str, reference: str | None, settings: dict) -> dict:
        """Each criterion asked of the fable and its reference in both orders (answer token
        only, with its alternatives' logprobs), then the age question of the fable alone."""
        if not reference or not reference.strip():
            return self._failed(settings, "pairwise: no reference fable for this prompt")
        wins = {}
        try:
            for criterion, question in pairwise.questions(self.rubric):
                if fable.strip() == reference.strip():
                    wins[criterion] = 0.5  # the reference against itself
                    continue
                asked = [pairwise.p_first(self._pair_token(prompt, a, b, question))
                         for a, b in ((fable, reference), (reference, fable))]
                if None in asked:
                    return self._failed(settings, f"no A or B among the answer's top tokens to {clip(question, 60)!r}")
                wins[criterion] = pairwise.beats(*asked)
        except Exception as e:  # the openai client already retried transient errors
            return self._failed(settings, f"request failed: {type(e).__name__}: {clip(str(e))}")
        return self._with_age(prompt, fable, settings, "pairwise", {
            "scores": pairwise.scores(wins, self.rubric), "wins": {c: round(p, 4) for c, p in wins.items()}})

    def _with_age(self, prompt: str, fable: str, settings: dict, reason: str, verdict: dict) -> dict:
        """A graded verdict (checklist, pairwise) completed by the age question, asked of the
        fable alone, then gated where the gate is on; a failed request or an answer with no
        age letter among its top tokens fails the verdict with its reason."""
        letters = [k for k, _ in self.rubric.age_groups]
        try:
            answer = self._answer_token(prompt, fable, age_question(self.rubric))
        except Exception as e:  # the openai client already retried transient errors
            return self._failed(settings, f"request failed: {type(e).__name__}: {clip(str(e))}")
        age = age_letter(answer, letters)
        if age is None:
            return self._failed(settings, "no age group letter among the answer's top tokens")
        record = {"verdict": {**verdict, "age_group": age, "age_expected": round(age_expected(answer, letters), 4)},
                  "reason": reason, "raw": None, "judge": settings}
        return self._gate(record, fable) if self.gated and self.mode != "likelihood" else record

    def _pair_token(self, prompt: str, first: str, second: str, question: str) -> list[dict]:
        return self._first_token_alternatives(pairwise.messages(self.rubric, prompt, first, second, question))

    @staticmethod
    def _failed(settings: dict, reason: str) -> dict:
        return {"verdict": None, "reason": reason, "raw": None, "judge": settings, "cached": False}

    def _answer_token(self, prompt: str, fable: str, question: str) -> list[dict]:
        return self._first_token_alternatives(checklist_messages(self.rubric, prompt, fable, question))

    def _first_token_alternatives(self, messages: list[dict]) -> list[dict]:
        """The top 20 alternatives of a one-token greedy answer, with their logprobs."""
        resp = self.client.chat.completions.create(model=self.model, messages=messages, temperature=0.0,
                                                   max_tokens=1, logprobs=True, top_logprobs=20)
        choice = resp.choices[0]
        content = choice.logprobs.content if choice.logprobs is not None and choice.logprobs.content else []
        return [t.model_dump() for t in content[0].top_logprobs] if content else []

    def _text_loss(self, text: str) -> float | None:
        """The judge's mean nats/token on `text` (the readability gate's input); None when the
        server returns no prompt logprobs."""
        n = self._nats(text)
        return None if n is None else per_token(n)

    def _nats(self, text: str, start: int = 0, end: int | None = None) -> dict | None:
        """The judge's nats on `text` before and from character `start` on, and from `end` on
        where given (eval/likelihood.py:read_nats: the fable alone, or its prompt, the fable
        after it and its close), from the completions endpoint's prompt logprobs (echo); None
        when the server returns none."""
        resp = self.client.completions.create(model=self.model, prompt=text if start else text.strip(), max_tokens=1,
                                              echo=True, logprobs=0, temperature=0.0)
        lp = resp.choices[0].logprobs
        if lp is None or not lp.token_logprobs:
            return None
        offsets = lp.text_offset if lp.text_offset and len(lp.text_offset) == len(lp.token_logprobs) else None
        if offsets is None:  # a server that echoes no offsets can still read a whole text
            if start:
                return None
            offsets = [0] * len(lp.token_logprobs)
        return read_nats(lp.token_logprobs, offsets, start, end)

    def _ask(self, prompt: str, fable: str) -> str | None:
        kw = {}
        if self.structured:
            kw["response_format"] = {"type": "json_schema",
                                     "json_schema": {"name": "verdict", "schema": self.rubric.json_schema()}}
        if self.mode in ("geval", "ensemble"):
            kw.update(logprobs=True, top_logprobs=20)
        resp = self.client.chat.completions.create(model=self.model, messages=self.rubric.messages(prompt, fable),
                                                   temperature=self.temperature, max_tokens=self.max_tokens, **kw)
        choice = resp.choices[0]
        lp = choice.logprobs.content if choice.logprobs is not None and choice.logprobs.content else None
        return choice.message.content, [t.model_dump() for t in lp] if lp else None


def _known(elements: dict | None) -> dict[str, str]:
    """The prompt elements of an item (which carries other fields too), where given."""
    return {k: str(elements[k]) for k in ELEMENTS if elements and isinstance(elements.get(k), str) and elements[k].strip()}


def judge_from_config(client, judge_cfg, rubric: Rubric, cache: VerdictCache | None) -> Judge:
    """A Judge with every setting of a run's [judge] table (distill.config.JudgeConfig)."""
    return Judge(client, judge_cfg.model, rubric, judge_cfg.judge_temperature, judge_cfg.max_tokens,
                 judge_cfg.structured, cache, judge_cfg.mode, judge_cfg.max_text_loss, judge_cfg.fluency_gate)


def judge_all(judge: Judge, items: list[dict], workers: int = 8, progress: str = "judge") -> list[dict]:
    """Judge every {"prompt", "fable", ...} item, several requests in flight so the server
    can batch them; returns the items with their verdict records, in order."""
    from concurrent.futures import ThreadPoolExecutor

    from tqdm import tqdm

    with ThreadPoolExecutor(workers) as pool:
        records = list(tqdm(pool.map(lambda it: judge.judge(it["prompt"], it["fable"], it), items),
                            total=len(items), desc=progress, unit="fable"))
    return [{**it, **rec} for it, rec in zip(items, records)]
