"""Combinatorial fable prompts in the TinyFabulist style.

    python -m teacher.prompts --split eval --n 5      # print a few prompts

A prompt is one draw of six elements (character, trait, setting, conflict,
resolution, moral) rendered through one of several instruction variants. Each
prompt carries its elements and a stable id (a hash of elements + variant), so a
prompt is the same prompt on every machine and across runs. The evaluation split
is drawn first from its own seed stream; training prompts never reuse its ids.
"""

from __future__ import annotations

import argparse
import hashlib
import json
import random
from pathlib import Path
import sys
from dataclasses import asdict, dataclass, replace

CHARACTERS = [
    "fox", "rabbit", "tortoise", "hare", "crow", "owl", "lion", "mouse", "ant", "grasshopper",
    "wolf", "lamb", "bear", "bee", "frog", "heron", "goat", "donkey", "horse", "dog",
    "cat", "rooster", "hen", "duck", "swan", "eagle", "sparrow", "squirrel", "deer", "elephant",
    "monkey", "tiger", "snake", "spider", "beaver", "otter", "badger", "hedgehog", "mole", "bat",
    "camel", "peacock", "crab", "turtle", "whale", "dolphin", "salmon", "butterfly", "caterpillar", "snail",
    "raven", "magpie", "pig", "cow", "ox", "kitten", "puppy", "gecko", "parrot", "penguin",
]
TRAITS = [
    "clever", "proud", "greedy", "kind", "lazy", "brave", "foolish", "patient", "curious", "stubborn",
    "generous", "jealous", "honest", "boastful", "shy", "wise", "impatient", "loyal", "selfish", "humble",
    "cunning", "gentle", "timid", "cheerful", "grumpy", "careless", "hardworking", "vain", "forgetful", "trusting",
]
SETTINGS = [
    "a dark forest", "a sunny meadow", "a riverbank", "a busy farmyard", "a snowy mountain",
    "a quiet pond", "a desert oasis", "a coral reef", "an old barn", "a village market",
    "a tall oak tree", "a windy hilltop", "a muddy swamp", "a royal garden", "a rocky shore",
    "a bamboo grove", "a frozen lake", "a wheat field", "a hidden cave", "a flower garden",
    "a jungle clearing", "an orchard in autumn", "a stormy sea", "a savanna at dusk", "a cottage kitchen",
    "a mountain pass", "a city park", "a vineyard", "a lighthouse island", "a misty marsh",
]
CONFLICTS = [
    "a drought dries up the water", "a storm destroys a home", "food runs out before winter",
    "a rival wants the same prize", "a friend breaks a promise", "a trap is set by a hunter",
    "a race must be won", "a treasure is found and disputed", "a bridge collapses",
    "a stranger asks for help", "a secret is about to be revealed", "a fire spreads nearby",
    "a flood rises quickly", "someone is lost far from home", "a boast leads to a challenge",
    "an egg goes missing", "a king demands a tribute", "a sickness spreads",
    "a shortcut looks tempting", "a gift is unfairly shared",
]
RESOLUTIONS = [
    "they work together", "honesty wins the day", "patience pays off", "a wise elder gives advice",
    "a clever trick saves everyone", "they learn from a painful mistake", "kindness is returned",
    "they admit they were wrong", "the weakest proves the strongest", "they share what they have",
]
MORALS = [
    "slow and steady wins the race", "pride comes before a fall", "a friend in need is a friend indeed",
    "honesty is the best policy", "look before you leap", "kindness is never wasted",
    "greed loses all", "unity is strength", "do not count your chickens before they hatch",
    "appearances can be deceiving", "necessity is the mother of invention", "practice what you preach",
    "little friends may prove great friends", "one good turn deserves another", "better safe than sorry",
    "the grass is not always greener", "hard work brings reward", "think before you speak",
    "gratitude makes us rich", "a liar is not believed even when telling the truth",
    "be content with what you have", "every creature has its gifts", "haste makes waste",
    "pride goes before destruction", "listen to good advice", "do not judge by size",
    "courage is acting despite fear", "sharing doubles joy", "plan ahead for hard times",
    "forgiveness heals",
]
# Instruction variants; each is filled from the same six elements, and each asks for a length:
# unbounded, the 1.5B teacher ran past 224 tokens on every held-out prompt and never reached
# the resolution or the moral, so its fables scored 0% and 10% on those two elements.
LENGTH = " Keep it under 150 words."
VARIANTS = [
    "Write a short fable for children about a {trait} {character} in {setting}. "
    "The conflict: {conflict}. It is resolved when {resolution}. End with the moral: \"{moral}\"." + LENGTH,
    "Tell a fable where the moral is \"{moral}\". The hero is a {trait} {character} who lives in "
    "{setting}, where {conflict}. In the end, {resolution}." + LENGTH,
    "Write a simple story in the style of Aesop. Main character: a {trait} {character}. Setting: "
    "{setting}. Problem: {conflict}. Resolution: {resolution}. Moral: {moral}." + LENGTH,
    "Once upon a time, in {setting}, there was a {trait} {character}. Continue this fable: "
    "{conflict}, and {resolution}. Finish with the lesson that {moral}." + LENGTH,
]
ELEMENTS = ("character", "trait", "setting", "conflict", "resolution", "moral")


@dataclass(frozen=True)
class Prompt:
    prompt_id: str
    split: str
    character: str
    trait: str
    setting: str
    conflict: str
    resolution: str
    moral: str
    variant: int
    instruction: str

    def elements(self) -> dict[str, str]:
        return {k: getattr(self, k) for k in ELEMENTS}


def prompt_id(elements: dict[str, str], variant: int) -> str:
    key = json.dumps([elements[k] for k in ELEMENTS] + [variant], ensure_ascii=True)
    return hashlib.sha256(key.encode()).hexdigest()[:16]


def _draw(rng: random.Random, split: str) -> Prompt:
    el = {
        "character": rng.choice(CHARACTERS),
        "trait": rng.choice(TRAITS),
        "setting": rng.choice(SETTINGS),
        "conflict": rng.choice(CONFLICTS),
        "resolution": rng.choice(RESOLUTIONS),
        "moral": rng.choice(MORALS),
    }
    variant = rng.randrange(len(VARIANTS))
    return Prompt(prompt_id(el, variant), split, **el, variant=variant,
                  instruction=VARIANTS[variant].format(**el))


def _unique(rng: random.Random, split: str, n: int, exclude: set[str]) -> list[Prompt]:
    out: list[Prompt] = []
    seen = set(exclude)
    while len(out) < n:
        p = _draw(rng, split)
        if p.prompt_id not in seen:
            seen.add(p.prompt_id)
            out.append(p)
    return out


def make_splits(n_train: int, n_eval: int = 50, seed: int = 0,
                eval_prompts: list[Prompt] | None = None) -> tuple[list[Prompt], list[Prompt]]:
    """Draw disjoint train and eval prompts. The eval split depends only on the seed and
    n_eval, so growing the training set never changes which prompts are held out; given
    `eval_prompts` (a curated set), those are held out instead, and no training prompt
    shares one's id (its hash)."""
    if n_train < 0 or n_eval < 0:
        raise ValueError(f"prompt counts must be >= 0 (n_train={n_train}, n_eval={n_eval})")
    if eval_prompts is None:
        eval_prompts = _unique(random.Random(f"{seed}/eval"), "eval", n_eval, set())
    train = _unique(random.Random(f"{seed}/train"), "train", n_train, {p.prompt_id for p in eval_prompts})
    return train, eval_prompts


def load_prompts(path: str) -> list[Prompt]:
    """Read prompts from a JSONL file of Prompt fields (ids are recomputed and checked)."""
    prompts = []
    try:
        with open(path, encoding="utf-8") as f:
            for n, line in enumerate(f, 1):
                if not line.strip():
                    continue
                try:
                    rec = json.loads(line)
                    el = {k: rec[k] for k in ELEMENTS}
                    if not all(isinstance(v, str) and v.strip() for v in el.values()):
                        raise TypeError(f"every one of {', '.join(ELEMENTS)} must be non-empty text")
                    variant = rec.get("variant", 0)
                    if isinstance(variant, bool) or not isinstance(variant, int) or not 0 <= variant < len(VARIANTS):
                        raise ValueError(f"variant {variant!r:.40} is not one of 0..{len(VARIANTS) - 1}")
                    instruction = rec.get("instruction") or VARIANTS[variant].format(**el)
                    split = rec.get("split", "train")
                    if not isinstance(instruction, str) or split not in ("train", "eval"):
                        raise TypeError("instruction must be text and split 'train' or 'eval'")
                except (KeyError, IndexError, TypeError, ValueError) as e:  # ValueError: JSON too
                    raise ValueError(f"prompts file {path}, line {n}: not a valid prompt "
                                     f"({type(e).__name__}: {str(e)[:200]})") from None
                prompts.append(Prompt(prompt_id(el, variant), split, **el, variant=variant, instruction=instruction))
    except OSError as e:
        raise ValueError(f"prompts file {path} cannot be read: {e.strerror}") from None
    except UnicodeDecodeError as e:
        raise ValueError(f"prompts file {path} is not UTF-8 text: {e}") from None
    if not prompts:
        raise ValueError(f"prompts file {path} holds no prompts")
    return prompts


# The held-out prompts of the protocol: 50 that together name every trait, setting, conflict,
# resolution and moral at least once, 50 of the 60 characters, and each instruction variant
# 12 or 13 times: each element list walked through in a seeded order, then five settings
# swapped between prompts where the draw put an animal where it cannot live (the whale
# from a snowy mountain to the coral reef, the crab from a desert oasis to the rocky shore).
CURATED_EVAL = Path(__file__).resolve().parent.parent / "eval" / "prompts" / "heldout-50.jsonl"


def eval_prompts_from(path: str | Path, n_eval: int) -> list[Prompt]:
    """The first n_eval prompts of a file of held-out prompts (load_prompts' format), as the
    eval split; a file of fewer, or with a prompt twice, is refused by name."""
    prompts = [replace(p, split="eval") for p in load_prompts(str(path))]
    ids = [p.prompt_id for p in prompts]
    if len(set(ids)) != len(ids):
        twice = next(p for p in prompts if ids.count(p.prompt_id) > 1)
        raise ValueError(f"eval prompts file {path}: the prompt about a {twice.trait} {twice.character} "
                         f"({twice.prompt_id}) is there twice")
    if len(prompts) < n_eval:
        raise ValueError(f"eval prompts file {path} holds {len(prompts)} prompts, fewer than eval_prompts = {n_eval}")
    return prompts[:n_eval]


def splits(n_train: int, n_eval: int, seed: int, prompts_file: str | None = None,
           eval_prompts_file: str | Path | None = None) -> tuple[list[Prompt], list[Prompt]]:
    """Training and evaluation prompts. Held out: the first n_eval of eval_prompts_file when
    given, else n_eval drawn by the seed. Training: from prompts_file when given, else drawn
    by the seed; either way none with an evaluation prompt's id."""
    curated = eval_prompts_from(eval_prompts_file, n_eval) if eval_prompts_file else None
    train, ev = make_splits(0 if prompts_file else n_train, n_eval, seed, curated)
    if prompts_file:
        eval_ids = {p.prompt_id for p in ev}
        train = [replace(p, split="train") for p in load_prompts(prompts_file) if p.prompt_id not in eval_ids][:n_train]
    return train, ev


def heldout_prompts(rows: list[dict]) -> list[dict]:
    """One row per held-out prompt (its first sample), in the order the teacher wrote them:
    the judged prompts are a prefix of this list, and students are judged on the same ones."""
    firsts: dict = {}
    for r in rows:
        firsts.setdefault(r["prompt_id"], r)
    return list(firsts.values())


def main(argv: list[str] | None = None) -> None:
    ap = argparse.ArgumentParser(description="print fable prompts as JSONL")
    ap.add_argument("--split", choices=["train", "eval"], default="train")
    ap.add_argument("--n", type=int, default=5)
    ap.add_argument("--seed", type=int, default=0)
    args = ap.parse_args(argv)
    train, ev = make_splits(args.n if args.split == "train" else 0, args.n if args.split == "eval" else 50, args.seed)
    for p in train if args.split == "train" else ev:
        print(json.dumps(asdict(p)))


if __name__ == "__main__":
    from distill.entry import guarded

    sys.exit(guarded(main, "python -m teacher.prompts")())
