"""The prompts of ``dllm-smol-bd``'s self-distillation data (issue 14): what the AR parent
(SmolLM2-135M-Instruct) answers, and its block-diffusion student learns to answer the same way.

Four sources, all offline and usable by the project:

* ``gsm8k``: GSM8K questions (MIT, ``../shared/data/gsm8k``); train questions for training, the
  first test questions for the held-out split (scored by the final number);
* ``lists``: natural-language versions of the task suite's list operations ("Sort these names
  alphabetically by last name: ..."), scored by the answer list appearing in order;
* ``general``: short general instructions written here as templates (facts, definitions,
  rewriting, lists), unscored: agreement with the parent is their measure;
* ``instructions``: more of them, from ``training/smol_instructions.py``'s templates (training only,
  appended after the rows above so that those keep their places);
* reasoning-gym is left out: its generators are an optional extra the CI machine lacks, and the
  three sources above already cover arithmetic and list reasoning.

``python -m training.smol_prompts out=data/smol/prompts_more.jsonl more=true`` writes training prompts
beyond those (:func:`build_more`: the rest of GSM8K train and more list prompts; a GPU run's data).

``python -m training.smol_prompts out=data/smol/prompts.jsonl`` writes one JSON row per prompt:
``prompt``, ``response`` ("" — the parent's answer is filled in by ``recipe=trajectories``),
``source``, ``split`` (train / heldout) and ``reference`` (the scorer's answer where one exists).
The rows are a pure function of the seed, so the file can always be rebuilt.
"""

from __future__ import annotations

import json
import random
import sys
from pathlib import Path

from dllm.errors import check
from dllm.eval.tasks.names import FIRST_NAMES, LAST_NAMES
from training.smol_instructions import instruction_rows

GSM8K_DIR = Path(__file__).resolve().parents[1].parent / "shared" / "data" / "gsm8k"

LIST_OPS = {  # op -> (instruction, answer of the list)
    "sort": ("Sort these names alphabetically by last name", lambda xs: sorted(xs, key=lambda n: n.split()[1])),
    "reverse": ("Write these names in reverse order", lambda xs: xs[::-1]),
    "copy": ("Repeat this list of names exactly", lambda xs: list(xs)),
    "first_names": ("Write only the first names of these people, in the same order",
                    lambda xs: [n.split()[0] for n in xs]),
    "last_names": ("Write only the last names of these people, in the same order",
                   lambda xs: [n.split()[1] for n in xs]),
}

COUNTRIES = ["France", "Germany", "Italy", "Spain", "Japan", "Canada", "Brazil", "Egypt", "India", "China", "Mexico",
             "Kenya", "Norway", "Sweden", "Greece", "Portugal", "Peru", "Chile", "Argentina", "Australia", "Poland",
             "Turkey", "Ireland", "Austria", "Thailand", "Vietnam", "Morocco", "Nigeria", "Finland", "Denmark"]
WORDS = ["gravity", "democracy", "photosynthesis", "an island", "a volcano", "a triangle", "inflation", "a habit",
         "friendship", "a computer", "energy", "a river", "a planet", "a library", "music", "a bridge", "a cloud",
         "an atom", "a poem", "a recipe", "a museum", "a desert", "an ocean", "a battery", "a map", "a vaccine",
         "an election", "a forest", "a telescope", "a language", "a calendar", "a magnet", "rain", "a city",
         "a muscle", "a budget", "a garden", "a molecule", "a theory", "a mountain"]
SENTENCES = ["The cat sleeps on the warm windowsill.", "We walk to the market every morning.",
             "She writes a letter to her grandmother.", "The children play football in the park.",
             "He reads the newspaper before breakfast.", "The train leaves the station at noon.",
             "They build a small house near the lake.", "I drink a cup of tea after dinner.",
             "The teacher explains the lesson slowly.", "Our team wins the final match.",
             "The baker makes fresh bread every day.", "My brother fixes old bicycles.",
             "The birds sing loudly in the trees.", "She paints the fence bright blue.",
             "We watch a movie on Friday night.", "The farmer grows corn and wheat.",
             "The dog chases the ball across the yard.", "He plays the piano beautifully.",
             "The students finish their homework early.", "The wind blows the leaves away."]
CATEGORIES = ["fruits", "vegetables", "colors", "animals that live in the ocean", "musical instruments", "planets",
              "sports", "countries in Europe", "kitchen tools", "birds", "things you find in a classroom",
              "types of weather", "jobs", "healthy breakfast foods", "board games", "tools for gardening",
              "ways to save energy", "reasons to read books", "things to pack for a trip", "flowers"]
GENERAL = [  # template, fillers
    ("What is the capital of {x}?", COUNTRIES),
    ("Name one famous food from {x}.", COUNTRIES),
    ("What language is spoken in {x}?", COUNTRIES),
    ("Explain what {x} is in one sentence.", WORDS),
    ("Give a simple definition of {x}.", WORDS),
    ("Write one sentence that uses the idea of {x}.", WORDS),
    ("Rewrite this sentence in the past tense: {x}", SENTENCES),
    ("Rewrite this sentence as a question: {x}", SENTENCES),
    ("Translate this sentence into French: {x}", SENTENCES),
    ("List three {x}.", CATEGORIES),
    ("List five {x}, separated by commas.", CATEGORIES),
    ("Name two {x} and say one thing about each.", CATEGORIES),
]


def gsm8k_rows(split: str, n: int) -> list[dict]:
    path = GSM8K_DIR / f"{split}.jsonl"
    check(path.exists(), f"GSM8K {split} questions not found at {path} (../shared/data/gsm8k)")
    rows = []
    for line in path.read_text().splitlines()[:n]:
        item = json.loads(line)
        final = item["answer"].split("####")[-1].strip().replace(",", "")
        rows.append({"prompt": item["question"], "source": "gsm8k", "reference": final})
    return rows


def list_rows(rng: random.Random, n: int) -> list[dict]:
    rows = []
    for _ in range(n):
        op = rng.choice(sorted(LIST_OPS))
        people = [f"{rng.choice(FIRST_NAMES)} {rng.choice(LAST_NAMES)}" for _ in range(rng.randint(3, 6))]
        instruction, answer = LIST_OPS[op]
        rows.append({"prompt": f"{instruction}: {', '.join(people)}.", "source": f"lists/{op}",
                     "reference": ", ".join(answer(people))})
    return rows


def general_rows(rng: random.Random) -> list[dict]:
    rows = [{"prompt": t.format(x=x), "source": "general", "reference": None} for t, xs in GENERAL for x in xs]
    rng.shuffle(rows)
    return rows


def build(seed: int = 0, n_gsm8k: int = 700, n_lists: int = 700, heldout_gsm8k: int = 50,
          heldout_lists: int = 100, heldout_general: int = 50, n_instructions: int = 1000) -> list[dict]:
    """Training rows first, then the held-out ones (a prefix of the file is a usable training set).
    The ``instructions`` rows come last among the training rows, from their own random stream: the
    rows written before they existed are unchanged, in the same order."""
    rng = random.Random(seed)
    train, held = gsm8k_rows("train", n_gsm8k), gsm8k_rows("test", heldout_gsm8k)
    lists = list_rows(rng, n_lists + heldout_lists)
    train, held = train + lists[:n_lists], held + lists[n_lists:]
    general = general_rows(rng)
    train, held = train + general[heldout_general:], held + general[:heldout_general]
    rng.shuffle(train)
    train += instruction_rows(random.Random(seed + 1), n_instructions)
    return ([{**r, "response": "", "split": "train"} for r in train]
            + [{**r, "response": "", "split": "heldout"} for r in held])


def build_more(seed: int = 1, n_lists: int = 2000, skip_gsm8k: int = 700,
               existing: str = "data/smol/prompts.jsonl") -> list[dict]:
    """Training prompts beyond :func:`build`'s, for a run with more compute (a GPU): every GSM8K train
    question after the first ``skip_gsm8k`` (those are in ``existing``), then ``n_lists`` list prompts
    from another random stream, leaving out any prompt ``existing`` holds (held-out ones above all)."""
    path = Path(existing)
    check(path.exists(), f"existing prompts file {path} not found (python -m training.smol_prompts)")
    seen = {json.loads(line)["prompt"] for line in path.read_text().splitlines()}
    rows = gsm8k_rows("train", 10**9)[skip_gsm8k:]
    lists, picked = list_rows(random.Random(seed), 2 * n_lists), []
    for r in lists:
        if r["prompt"] not in seen and len(picked) < n_lists:
            seen.add(r["prompt"])
            picked.append(r)
    rows = [r for r in rows if r["prompt"] not in seen] + picked
    random.Random(seed).shuffle(rows)  # a prefix (a run stopped early) still mixes both sources
    return [{**r, "response": "", "split": "train"} for r in rows]


def main(argv: list[str]) -> None:
    args = dict(a.split("=", 1) for a in argv)
    out = Path(args.pop("out", "data/smol/prompts.jsonl"))
    more = args.pop("more", "false").lower() in ("1", "true", "yes")
    existing = args.pop("existing", "data/smol/prompts.jsonl")
    rows = (build_more(existing=existing, **{k: int(v) for k, v in args.items()}) if more
            else build(**{k: int(v) for k, v in args.items()}))
    out.parent.mkdir(parents=True, exist_ok=True)
    tmp = out.with_suffix(".tmp")
    tmp.write_text("".join(json.dumps(r) + "\n" for r in rows))
    tmp.replace(out)
    print(f"{out}: {sum(r['split'] == 'train' for r in rows)} train, {sum(r['split'] == 'heldout' for r in rows)} "
          "held-out prompts")


if __name__ == "__main__":
    main(sys.argv[1:])
