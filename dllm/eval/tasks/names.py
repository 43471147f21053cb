"""Name lists for the waiting-line tasks.

ParallelBench (arXiv 2510.04767) draws full names "First Last" from a name list; ours is our own
short list of common English names, each a single plain word, so that every full name is only a
few tokens for the small BPE tokenizer of the embedded model.
"""

FIRST_NAMES = (
    "Amy", "Ann", "Ben", "Bob", "Cara", "Dan", "Emma", "Eve",
    "Fred", "Grace", "Hank", "Ivy", "Jack", "Kate", "Leo", "Mary",
    "Ned", "Paul", "Rose", "Sam", "Tina", "Tom", "Vera", "Zoe",
)

LAST_NAMES = (
    "Brown", "Clark", "Davis", "Evans", "Ford", "Fox", "Green", "Hall",
    "Hill", "King", "Lane", "Lee", "Moore", "Nash", "Price", "Reed",
    "Scott", "Shaw", "Stone", "Todd", "Wade", "West", "Wood", "Young",
)

FULL_NAMES = tuple(f"{first} {last}" for first in FIRST_NAMES for last in LAST_NAMES)
