"""Name lists for the waiting-line tasks, dllm's own and the ParallelBench-format ones alike.

ParallelBench (arXiv 2510.04767) draws full names "First Last" from a name list; ours is our own
short list of common English names, each a single plain word, so that every full name is only a
few tokens for the small BPE tokenizer of the embedded model. The ParallelBench-format items use
the same list (issue 17): once used a wider list of their own (a first name for every letter), whose
names were new tokens to the embedded model, and its retrain could not learn to copy them while
keeping its own tasks (bench/tiny_printable/expand.md). Which names fill a list does not touch the
benchmark's point, tokens that depend on each other.
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
