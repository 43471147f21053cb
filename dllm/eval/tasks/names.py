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

# The ParallelBench-format items (parallelbench.py): our own longer list, "First Last" over every
# letter of the alphabet, for a model whose tokenizer writes any printable text. Not the
# benchmark's list (its items are read from the user's copy, never shipped).
PB_FIRST_NAMES = (
    "Adam", "Alice", "Brian", "Bianca", "Carlos", "Chloe", "Derek", "Diana", "Edgar", "Elena",
    "Felix", "Fiona", "George", "Gloria", "Hector", "Helen", "Isaac", "Irene", "Jason", "Julia",
    "Keith", "Karen", "Lucas", "Laura", "Marcus", "Monica", "Nathan", "Nora", "Oscar", "Olivia",
    "Peter", "Paula", "Quentin", "Quinn", "Ralph", "Rachel", "Simon", "Sofia", "Trevor", "Tessa",
    "Umar", "Ursula", "Victor", "Violet", "Walter", "Wendy", "Xavier", "Ximena", "Yusuf", "Yvonne",
    "Zachary", "Zoey",
)

PB_LAST_NAMES = (
    "Abbott", "Barker", "Burton", "Castillo", "Dawson", "Dixon", "Ellison", "Fleming", "Fuller",
    "Garner", "Gibson", "Harper", "Holland", "Ingram", "Jensen", "Keller", "Knight", "Lambert",
    "Lowery", "Maxwell", "Mendez", "Newton", "Norris", "Oakley", "Owens", "Palmer", "Porter",
    "Quinlan", "Ramsey", "Rhodes", "Sawyer", "Schultz", "Thornton", "Tucker", "Underwood", "Vaughn",
    "Vega", "Walsh", "Whitaker", "Xiong", "Yates", "Young", "Zamora", "Ziegler",
)

PB_FULL_NAMES = tuple(f"{first} {last}" for first in PB_FIRST_NAMES for last in PB_LAST_NAMES)
