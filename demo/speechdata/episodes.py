"""Short story episodes for the semantic benchmarks (sSC / tSC) at micro scale: a two-sentence prompt that
introduces a name, an object, a place or a state, and a one-sentence ending that must agree with it.

Why episodes beside the long stories of `stories.py`: a spoken long story is about 350 units, longer than
a micro cell's context, and its ending depends on details a few hundred tokens back. An episode is about
20 words (a spoken episode about 150 units at 25 Hz), and its ending repeats what the prompt set up:

- `own`:     "Mia had a red kite. She took it to the beach." -> "At the beach, Mia played with the red kite."
- `friend`:  "Tom met Sue at the park. They found a blue ball." -> "Then Sue gave the blue ball to Tom."
- `weather`: "It was a rainy day. Ben wanted to go to the lake." -> "So Ben put on his raincoat and went to
  the lake." (the clothes agree with the weather: a state, not a copy)
- `pet`:     "Lily saw a hurt rabbit in the garden. She took it home." -> "Lily gave the rabbit some
  carrots, and soon it could hop again." (food and move agree with the animal)

So the right ending depends on the prompt in ways a small model can learn (recurring names, objects,
places; a state the ending agrees with). `Episode.variant(slot, value)` rewrites the ending with one slot
changed (the sSC negative); `Episode.swaps` lists the slots that may change and their pools.

Held-out split as in `stories.py`: an episode is held out when the CRC-32 of its prompt is 0 modulo
`stories.HELDOUT_MOD`; `generate_episodes(..., split="train")` never emits one.
"""
from __future__ import annotations

import random
from dataclasses import dataclass, field

from . import stories as S

KINDS = ("own", "friend", "weather", "pet")
# small pools, each value seen often: a micro model learns "this name / object / place again" per value
_GIRLS = S.GIRLS[:8]
_BOYS = S.BOYS[:8]
_NAMES = _GIRLS + _BOYS
_PLACES = ("park", "garden", "beach", "forest", "farm", "zoo")
_OBJECTS = ("ball", "kite", "doll", "car", "boat", "hat", "book", "drum")
_COLORS = ("red", "blue", "green", "yellow", "pink", "white")
_PET_ANIMALS = ("dog", "cat", "bird", "rabbit", "duck", "frog", "mouse", "horse", "monkey", "bear")
_WEATHER_ENDING = {"cold": "coat", "snowy": "boots", "rainy": "raincoat", "sunny": "cap", "hot": "shorts",
                   "windy": "jacket"}

# the prompt's last sentence holds what the ending must agree with, a few words before it
OWN_P = ("{name} went to the {place}. {He} had a {color} {obj}.",
         "{name} was at the {place}. {He} had a {color} {obj} with {him}.")
OWN_E = ("At the {place}, {name} played with the {color} {obj}.",
         "{name} played with the {color} {obj} at the {place}.")
FRIEND_P = ("{name} met {fname} at the {place}. They found a {color} {obj}.",
            "{name} and {fname} went to the {place}. They saw a {color} {obj}.")
FRIEND_E = ("Then {fname} gave the {color} {obj} to {name}.",
            "{name} let {fname} keep the {color} {obj}.")
WEATHER_P = ("{name} wanted to go to the {place}. It was a {weather} day.",
             "{name} was going to the {place}. The day was {weather}.")
WEATHER_E = ("So {name} put on {his} {cloth} and went to the {place}.",
             "{name} put on {his} {cloth} and ran to the {place}.")
PET_P = ("{name} went to the {place}. {He} saw a hurt {animal} there.",
         "{name} was at the {place}. {He} found a little {animal} that was hurt.")
PET_E = ("{name} gave the {animal} some {food}, and soon it could {move} again.",
         "The {animal} ate the {food}, and soon it could {move} again.")
TEMPLATES = {"own": (OWN_P, OWN_E), "friend": (FRIEND_P, FRIEND_E), "weather": (WEATHER_P, WEATHER_E),
             "pet": (PET_P, PET_E)}
# slots the sSC negative may change: grounded in the prompt (name, place, ...) or agreeing with its state
SEMANTIC = {"cloth", "food", "move"}


@dataclass
class Episode:
    kind: str
    prompt: str
    ending_tpl: str
    ctx: dict
    swaps: dict = field(default_factory=dict)

    @property
    def ending(self) -> str:
        return _fmt(self.ending_tpl, self.ctx)

    @property
    def text(self) -> str:
        return f"{self.prompt} {self.ending}"

    def variant(self, slot: str, value: str) -> str:
        return _fmt(self.ending_tpl, {**self.ctx, slot: value})


def _fmt(tpl: str, ctx: dict) -> str:
    s = tpl.format(**ctx)
    return s[0].upper() + s[1:]


def _gender_pool(name: str) -> tuple[str, ...]:
    return _GIRLS if S.NAMES[name] == "f" else _BOYS


def _one(rng: random.Random) -> Episode:
    kind = rng.choice(KINDS)
    name = rng.choice(_NAMES)
    g = S.NAMES[name]
    c = {"name": name, "He": "He" if g == "m" else "She", "his": "his" if g == "m" else "her",
         "him": "him" if g == "m" else "her",
         "place": rng.choice(_PLACES)}
    swaps = {"name": _gender_pool(name), "place": _PLACES}
    if kind in ("own", "friend"):
        c.update(color=rng.choice(_COLORS), obj=rng.choice(_OBJECTS))
        swaps.update(color=_COLORS, obj=_OBJECTS)
    if kind == "friend":
        c["fname"] = rng.choice([n for n in _NAMES if n != name])
        swaps["fname"] = _NAMES
    if kind == "weather":
        c["weather"] = rng.choice(tuple(_WEATHER_ENDING))
        c["cloth"] = _WEATHER_ENDING[c["weather"]]
        swaps["cloth"] = tuple(v for v in _WEATHER_ENDING.values())
    if kind == "pet":
        a = rng.choice(_PET_ANIMALS)
        c.update(animal=a, food=S.ANIMALS[a][2], move=S.ANIMALS[a][1])
        swaps.update(animal=_PET_ANIMALS, food=tuple(sorted({S.ANIMALS[x][2] for x in _PET_ANIMALS})),
                     move=tuple(sorted({S.ANIMALS[x][1] for x in _PET_ANIMALS})))
    prompts, endings = TEMPLATES[kind]
    prompt = _fmt(rng.choice(prompts), c)
    ending_tpl = rng.choice(endings)
    return Episode(kind, prompt, ending_tpl, c, swaps)


def iter_episodes(seed: int, split: str = "train"):
    """Episodes of one split, forever (deterministic for a seed)."""
    if split not in ("train", "heldout"):
        raise ValueError(f"split: expected train or heldout, got {split!r}")
    rng = random.Random(f"episodes-{seed}")
    while True:
        e = _one(rng)
        if S.is_heldout(e.prompt) == (split == "heldout"):
            yield e


def generate_episodes(n: int, seed: int, split: str = "train") -> list[str]:
    """`n` episode texts (prompt + ending) of one split."""
    it = iter_episodes(seed, split)
    return [next(it).text for _ in range(n)]


def adversarial_ending(e: Episode, rng: random.Random) -> str | None:
    """The ending with one slot changed to a value that contradicts the prompt: a grounded slot (a name,
    object, colour, place, animal the prompt set up) to one the prompt never mentions, or a state slot
    (clothes, food, move) to one that disagrees with the weather or the animal."""
    prompt_words = set(S.words(e.prompt))
    usable = []
    for slot, pool in sorted(e.swaps.items()):
        if "{" + slot + "}" not in e.ending_tpl:
            continue
        cur = str(e.ctx[slot])
        cands = [v for v in pool if v != cur and not any(w in prompt_words for w in S.words(v))]
        if cands:
            usable.append((slot, sorted(set(cands))))
    if not usable:
        return None
    slot, cands = rng.choice(usable)
    return e.variant(slot, rng.choice(cands))
