"""More short general instructions for ``dllm-smol-bd``'s self-distillation data (issue 14's "a few
thousand short general instructions that you write as templates"): word knowledge, small arithmetic,
facts about animals, things and places, rewriting and everyday advice. Each template is filled from
a list (or two) written here; every answer the parent gives is short, so most of them fit the CPU
recipe's 64-token answers. Unscored (``reference`` None): agreement with the parent is their measure.

``training/smol_prompts.py`` appends ``n_instructions`` of them (source ``instructions``) to its
training rows, after the rows it wrote before they existed, so the older rows (and every held-out
row) keep their places: a recipe filtered to the older sources reads exactly the rows it read then.
"""

from __future__ import annotations

import itertools
import random

ADJECTIVES = ["happy", "cold", "fast", "bright", "heavy", "quiet", "young", "strong", "early", "easy", "rich", "wet",
              "tall", "clean", "soft", "loud", "empty", "safe", "warm", "dark", "thick", "sharp", "sweet", "wide"]
NOUNS = ["child", "mouse", "box", "city", "leaf", "tooth", "knife", "story", "bus", "woman", "foot", "party",
         "glass", "wolf", "baby", "church", "potato", "goose", "toy", "fox", "class", "berry", "wish", "man"]
VERBS = ["go", "eat", "run", "write", "see", "take", "swim", "buy", "think", "sing", "drink", "fly", "begin",
         "speak", "drive", "catch", "teach", "sleep", "find", "bring", "grow", "choose", "forget", "build"]
ANIMALS = ["dog", "cat", "horse", "spider", "bird", "cow", "snake", "frog", "lion", "ant", "whale", "bee", "rabbit",
           "shark", "owl", "elephant", "duck", "octopus", "penguin", "butterfly", "camel", "turtle", "bat", "goat"]
A_ANIMAL = [("an " if a[0] in "aeiou" else "a ") + a for a in ANIMALS]  # "an owl", "a dog"
THINGS = ["a hammer", "a clock", "a refrigerator", "an umbrella", "a pencil", "a thermometer", "a compass",
          "a microscope", "a ladder", "a kettle", "a bicycle", "a candle", "a toothbrush", "a wallet", "a stapler",
          "a helmet", "a spoon", "a broom", "a camera", "a pillow", "a key", "a ruler", "a blanket", "a sponge"]
TOPICS = ["the sea", "autumn", "a rainy day", "the moon", "a busy street", "breakfast", "a good friend", "winter",
          "the mountains", "a library", "a train journey", "the first day of school", "a garden in spring",
          "a thunderstorm", "a birthday party", "a quiet morning", "the desert at night", "a football match"]
ACTIVITIES = ["sleeping better", "learning a new language", "saving money", "staying healthy", "studying for an exam",
              "running a first race", "cooking rice", "keeping a plant alive", "making friends at a new school",
              "writing a clear email", "reducing stress", "starting to exercise", "packing a suitcase",
              "speaking in public", "drinking more water", "waking up early", "taking notes in class",
              "keeping a room tidy"]
CONTINENTS = ["Europe", "Asia", "Africa", "South America", "North America", "Oceania"]
PLACES = ["Paris", "Tokyo", "London", "Cairo", "New York", "Rome", "Sydney", "Moscow", "Beijing", "Berlin", "Madrid",
          "Mumbai", "Toronto", "Rio de Janeiro", "Istanbul", "Athens", "Lisbon", "Dublin", "Vienna", "Bangkok"]
SENTENCES = ["the meeting was moved to tuesday", "i has two brother and one sister", "she dont like cold weather",
             "we was late for the bus", "the results of the test is ready", "he go to school by bike",
             "their going to the beach tomorrow", "the book who I read was long", "me and him plays chess",
             "i seen that movie last week", "there is many apples on the table", "she can sings very well"]
COLORS_OF = ["the sky on a clear day", "grass", "snow", "a ripe banana", "a ripe tomato", "coal", "an orange",
             "a lemon", "milk", "a fire truck", "chocolate", "the sea"]

TEMPLATES = [  # template, the lists its slots draw from
    ("What is the opposite of the word '{0}'?", [ADJECTIVES]),
    ("Give two synonyms for the word '{0}'.", [ADJECTIVES]),
    ("Use the word '{0}' in a short sentence.", [ADJECTIVES]),
    ("What is the plural of '{0}'?", [NOUNS]),
    ("What is the past tense of the verb '{0}'?", [VERBS]),
    ("Write a sentence in the future tense with the verb '{0}'.", [VERBS]),
    ("How many legs does {0} have?", [A_ANIMAL]),
    ("What does {0} eat?", [A_ANIMAL]),
    ("Where does {0} usually live?", [A_ANIMAL]),
    ("Is {0} a mammal? Answer yes or no and say why in one sentence.", [A_ANIMAL]),
    ("Which is bigger, {0} or {1}?", [A_ANIMAL, A_ANIMAL]),
    ("What is {0} used for?", [THINGS]),
    ("Describe {0} in one sentence.", [THINGS]),
    ("Write one sentence about {0}.", [TOPICS]),
    ("Give three words that describe {0}.", [TOPICS]),
    ("Give one short tip for {0}.", [ACTIVITIES]),
    ("Why is {0} useful? Answer in one sentence.", [ACTIVITIES]),
    ("Name one country in {0}.", [CONTINENTS]),
    ("In which country is {0}?", [PLACES]),
    ("Name one famous landmark in {0}.", [PLACES]),
    ("Correct the grammar of this sentence: {0}", [SENTENCES]),
    ("What color is {0}?", [COLORS_OF]),
    ("What is {0} plus {1}?", [range(2, 60), range(2, 40)]),
    ("What is {0} minus {1}?", [range(20, 99), range(1, 20)]),
    ("What is {0} times {1}?", [range(2, 13), range(2, 13)]),
    ("Which number is larger, {0} or {1}?", [range(10, 500, 7), range(13, 500, 11)]),
]


def instruction_rows(rng: random.Random, n: int, per_template: int = 80) -> list[dict]:
    """Up to ``n`` distinct prompts, drawn evenly across the templates, at most ``per_template`` from
    each (the number templates would otherwise fill most of the data)."""
    pools = []
    for template, slots in TEMPLATES:
        fills = [f for f in itertools.product(*slots) if len(set(f)) == len(f)]  # "a dog or a dog": not asked
        rng.shuffle(fills)
        pools.append([template.format(*f) for f in fills[:per_template]])
    prompts: list[str] = []
    while len(prompts) < n and any(pools):  # round robin: every template gets its share before any repeats
        for pool in pools:
            if pool and len(prompts) < n:
                prompts.append(pool.pop())
    rng.shuffle(prompts)
    return [{"prompt": p, "source": "instructions", "reference": None} for p in prompts]
