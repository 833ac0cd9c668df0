"""A deterministic TinyStories-like story generator: a small probabilistic grammar with a closed lexicon.

Why a generator: no package ships TinyStories, and a grammar gives a small closed vocabulary (about
1,000 word types) and a register like TinyStories (the SIMS paper's sTinyStories), so micro models
learn something measurable in minutes. The stories carry learnable structure that the evaluation sets
(`evalsets.py`) probe:

- long-range consistency: every ending refers back to what the story set up (the lost object is found,
  with its colour; the friend who helped is thanked; the hurt animal can fly/hop/swim again; weather
  decides the clothes: cold -> coat, rain -> raincoat, sun -> sandals ...);
- agreement: he/she/his/her/himself/herself follow the names' gender; was/were, is/are, has/have,
  likes/like follow the subject's number; a/an/two/some/many follow the noun's number.

API: `generate_stories(n, seed)` -> list of plain-ASCII stories (3-8 sentences, 40-120 words, only
`. , !` punctuation, one space between sentences); `lexicon()` / `LEXICON` -> the sorted lowercase word
types the grammar can emit; `words(text)` -> its lowercase word tokens; `sentences(text)`.

Held-out split: a story belongs to the held-out split when the CRC-32 of its prompt (the story without
its last sentence) is 0 modulo `HELDOUT_MOD`. `generate_stories(..., split="train")` (the default)
never emits a held-out story and `split="heldout"` emits only those, so story-cloze prompts built from
held-out stories are never training prompts, whatever seeds either side uses.
"""
from __future__ import annotations

import random
import re
import zlib
from dataclasses import dataclass, field

HELDOUT_MOD = 16
MIN_WORDS, MAX_WORDS = 40, 120
MIN_SENTS, MAX_SENTS = 3, 8

_REG: list[str] = []   # every template string; lexicon() reads their literal words


def _t(*alts: str) -> tuple[str, ...]:
    _REG.extend(alts)
    return alts


# ---------------------------------------------------------------------------------------------- pools
GIRLS = ("Lily", "Mia", "Anna", "Sue", "Lucy", "Emma", "Sara", "Kim", "Amy", "Zoe", "Ella", "Rose",
         "Jane", "Nora", "Ruby", "Molly", "Lola", "Hannah", "Chloe", "Grace", "Alice", "Julia", "Katie",
         "Mary")
BOYS = ("Tom", "Ben", "Sam", "Tim", "Jack", "Leo", "Jake", "Finn", "Bob", "Joe", "Dan", "Ned", "Luke",
        "Oscar", "Theo", "Henry", "Peter", "Alex", "Noah", "Max", "Billy", "Timmy", "Ollie", "Sid")
PETS = ("Spot", "Buddy", "Coco", "Lucky", "Rex", "Fluffy", "Pip", "Rusty", "Patch", "Snowy")
NAMES = {**{n: "f" for n in GIRLS}, **{n: "m" for n in BOYS}}

# animal: (plural, how it moves, what a hurt one eats)
ANIMALS = {
    "dog": ("dogs", "run", "meat"), "cat": ("cats", "run", "milk"), "bird": ("birds", "fly", "seeds"),
    "rabbit": ("rabbits", "hop", "carrots"), "duck": ("ducks", "swim", "bread"),
    "frog": ("frogs", "hop", "bugs"), "bear": ("bears", "walk", "honey"), "fox": ("foxes", "run", "meat"),
    "mouse": ("mice", "run", "cheese"), "horse": ("horses", "run", "apples"),
    "cow": ("cows", "walk", "grass"), "pig": ("pigs", "walk", "apples"), "owl": ("owls", "fly", "bugs"),
    "bee": ("bees", "fly", "honey"), "lion": ("lions", "run", "meat"),
    "monkey": ("monkeys", "climb", "bananas"), "turtle": ("turtles", "swim", "leaves"),
    "squirrel": ("squirrels", "climb", "nuts"), "puppy": ("puppies", "run", "milk"),
    "kitten": ("kittens", "run", "milk"), "butterfly": ("butterflies", "fly", "honey"),
    "goat": ("goats", "walk", "grass"), "hen": ("hens", "walk", "corn"), "crab": ("crabs", "walk", "fish"),
    "bunny": ("bunnies", "hop", "carrots"), "swan": ("swans", "swim", "bread"),
    "goose": ("geese", "swim", "bread"), "ant": ("ants", "walk", "seeds"),
}
SMALL_ANIMALS = ("bird", "rabbit", "duck", "frog", "owl", "turtle", "squirrel", "mouse", "kitten",
                 "puppy", "hen", "bunny", "swan", "goose", "fox", "butterfly", "crab", "monkey", "horse")
MOVES = ("run", "fly", "hop", "swim", "walk", "climb")
MOVE_ING = {"run": "running", "fly": "flying", "hop": "hopping", "swim": "swimming", "walk": "walking",
            "climb": "climbing"}
DOINGS = ("playing", "sleeping", "eating", "resting")

PLACES = {
    "park": (("under the bench", "behind the big tree", "near the slide", "under the swings",
              "in the tall grass", "behind a bush"), ("dog", "bird", "squirrel", "duck", "puppy")),
    "garden": (("under the flowers", "behind the fence", "near the big rock", "under a leaf",
                "next to the pond"), ("bee", "butterfly", "bird", "rabbit", "frog", "bunny")),
    "beach": (("in the sand", "behind a big rock", "under the towel", "near the water",
               "inside a bucket"), ("crab", "bird", "turtle", "dog")),
    "forest": (("under a log", "behind a big tree", "near the river", "in a hole", "under the leaves"),
               ("fox", "owl", "bear", "rabbit", "squirrel")),
    "farm": (("in the barn", "behind the hay", "near the fence", "under the cart"),
             ("cow", "pig", "horse", "hen", "goat", "goose", "duck")),
    "yard": (("under the steps", "behind the shed", "in the grass", "near the gate"),
             ("cat", "dog", "bird", "kitten", "squirrel", "mouse")),
    "playground": (("under the slide", "in the sandbox", "behind the swings", "near the gate"),
                   ("bird", "dog", "puppy", "ant")),
    "lake": (("near the water", "under a rock", "behind the boat house", "in the mud"),
             ("duck", "frog", "swan", "goose", "turtle")),
    "zoo": (("near the gate", "behind the bench", "under a big leaf", "next to the pond"),
            ("lion", "monkey", "bear", "horse", "goat", "mouse")),
}
PLACE_IN = {"beach": "on", "farm": "on", "lake": "near", "playground": "at", "zoo": "at"}  # else "in"
PLACE_ACTIVITY = {"park": "play on the swings", "garden": "look at the flowers", "beach": "play in the sand",
                  "forest": "look for birds", "farm": "see the animals", "yard": "play ball",
                  "playground": "go down the slide", "lake": "feed the ducks",
                  "zoo": "see the lions"}
OBJECTS = ("ball", "kite", "doll", "car", "truck", "boat", "hat", "book", "box", "cup", "ring", "key",
           "crayon", "block", "train", "robot", "drum", "balloon", "shell", "bell", "coin", "map",
           "blanket", "basket", "bucket", "shovel", "puzzle", "whistle", "necklace", "button", "marble",
           "sticker", "jar", "ribbon", "wagon", "plane", "flute", "brush", "spoon", "bag", "toy", "star",
           "teddy", "yoyo", "rope")
COLORS = ("red", "blue", "green", "yellow", "pink", "purple", "orange", "brown", "black", "white",
          "gold", "silver")
KID_ADJ = ("little", "kind", "happy", "small", "good", "curious", "funny", "sweet", "shy", "clever")
HOBBIES = ("play outside", "draw pictures", "sing songs", "read books", "run fast", "dance",
           "help others", "climb trees", "ride {his} bike", "play with {his} toys", "look at the stars")
WEATHER_CLOTHES = {
    "cold": ("coat", "sweater", "gloves", "scarf"), "snowy": ("boots", "mittens", "coat"),
    "rainy": ("raincoat", "boots"), "sunny": ("cap", "sunglasses", "sandals"),
    "hot": ("shorts", "sandals", "cap"), "windy": ("jacket", "scarf"),
}
CLOTHES = tuple(sorted({c for cs in WEATHER_CLOTHES.values() for c in cs}))
FOODS = ("apple", "banana", "cookie", "sandwich", "muffin", "pear", "peach", "cupcake", "carrot",
         "pie", "cake", "plum", "donut", "pancake")
BAKES = ("cake", "pie", "cookies", "muffins", "bread", "cupcakes", "pancakes")
INGREDIENTS = ("eggs", "milk", "sugar", "flour", "butter", "honey")
BRAVE = {"climb": ("tree", "hill", "rock", "wall", "ladder", "tower"),
         "swim": ("lake", "pool", "river", "pond", "sea"),
         "ride": ("bike", "scooter", "horse", "pony", "sled")}
THINGS = {"beach": ("castle", "tower", "wall"), "forest": ("fort", "hut", "bridge"),
          "yard": ("snowman", "fort", "tower"), "park": ("fort", "hut", "castle")}
MATERIALS = {"beach": ("sand", "shells", "stones", "sticks"), "forest": ("sticks", "leaves", "stones", "logs"),
             "yard": ("snow", "sticks", "stones", "boxes"), "park": ("sticks", "leaves", "boxes", "stones")}
GAMES = ("tag", "catch", "ball", "hide and seek", "house", "pirates")
ROOMS = ("kitchen", "bedroom", "hall", "living room")
PARENTS = {"Mom": "f", "Dad": "m", "Grandma": "f", "Grandpa": "m"}

# template literals kept as module data (read by lexicon()); `{..}` fields are filled per story
_FIELD_WORDS = "he she him her his himself herself"


def _art(word: str) -> str:
    return "an" if word[0] in "aeiou" else "a"


def _pron(g: str, p: str = "") -> dict:
    m = g == "m"
    return {p + "he": "he" if m else "she", p + "him": "him" if m else "her",
            p + "his": "his" if m else "her", p + "himself": "himself" if m else "herself",
            p + "kid": "boy" if m else "girl"}


# ------------------------------------------------------------------------------------------ templates
BEGIN_PAST = _t("Once upon a time, there was a {kadj} {kid} named {name}.",
                "{name} was a {kadj} {kid} who liked to {hobby}.",
                "Once upon a time, in a small town, there lived a {kid} named {name}.",
                "There was once a {kadj} {kid} called {name}.")
BEGIN_PAST2 = _t("{he} liked to {hobby}.", "Every day, {he} wanted to {hobby}.",
                 "{he} had a big smile and many friends.")
BEGIN_PRESENT = _t("This is {name}.", "Meet {name}.")
BEGIN_PRESENT2 = _t("{he} is a {kadj} {kid} and {he} likes to {hobby}.",
                    "{he} is a {kadj} {kid} who has a lot of friends.",
                    "{he} likes to {hobby} and {he} has a {pet_kind} named {pet}.",
                    "{he} and {his} friends are always happy when they have time to play.")
FLAVOR_PL = _t("{num} {animals} were {ing} {in} the {place}.", "There were {num} {animals} {in} the {place}.")
FLAVOR_SG = _t("{a_animal} was {ing} {in} the {place}.", "There was {a_animal} {in} the {place}.")
FLAVOR_PRESENT = _t("The {animals} {in} the {place} like to {move}.", "{a_animal} likes to {move}.")
NUMS = ("two", "three", "some", "many", "four")

LOST = dict(
    own=_t("{he} had a {color} {obj} that {he} loved very much.",
           "{name} had a {color} {obj}, and it was {his} favorite toy."),
    go=_t("One day, {name} took the {obj} to the {place}.",
          "One sunny day, {name} and {his} {obj} went to the {place}."),
    play=_t("{he} played with {his} {obj} for a long time.", "{he} was having so much fun."),
    lose=_t("But when it was time to go home, the {obj} was gone!",
            "Then {he} could not find {his} {obj} anywhere."),
    sad=_t("{name} was very sad and started to cry.", "{name} felt sad and worried."),
    look=_t("{he} looked {spot1}, but it was not there.", "{he} looked {spot1} and found nothing."),
    helper_kid=_t("{his} friend {hname} came to help {him}.", "Then {hname} came by and wanted to help."),
    helper_pet=_t("{his} {pet_kind} {hname} came to help {him}.",),
    helper_parent=_t("{his} {hname} came to help {him}.",),
    end_kid=_t("{hname} found the {color} {obj} {spot2}, and {name} gave {hhim} a big hug.",
               "At last, {hname} found the {color} {obj} {spot2}, and {name} said thank you."),
    end_pet=_t("{hname} found the {color} {obj} {spot2}, and {name} gave {hname} a big hug.",),
    end_self=_t("At last, {name} found {his} {color} {obj} {spot2} and smiled.",
                "{name} was so happy to have {his} {color} {obj} back."),
)
WEATHER = dict(
    wake=_t("One morning, {name} looked out of the window.", "{name} woke up early one morning."),
    cold=_t("It was a very cold day.", "The air was cold and {name} could see {his} breath."),
    snowy=_t("Snow was falling and the ground was white.", "It was a snowy day."),
    rainy=_t("Rain was falling and there were big puddles.", "It was a rainy day."),
    sunny=_t("The sun was bright and the sky was blue.", "It was a sunny day."),
    hot=_t("It was a very hot day.", "The sun was hot and the air was warm."),
    windy=_t("The wind was blowing hard.", "It was a windy day."),
    want=_t("{name} wanted to go to the {place} to {activity}.",),
    tell=_t("{his} {parent} told {him} to put on {his} {cloth}.",),
    warn=_t("{his} {parent} said that {he} had to dress for the weather.",),
    ready=_t("{name} ran to get {his} things.", "{he} was very excited.",
             "{name} looked at {himself} in the mirror."),
    end=_t("So {name} put on {his} {cloth} and went to the {place}.",
           "{name} put on {his} {cloth}, and then {he} ran to the {place}."),
)
SHARE = dict(
    have=_t("{name} had {a_food} for lunch.", "{name} had a big {food} in {his} bag.",
            "{name} made {himself} {a_food} for lunch."),
    sit=_t("{he} sat down on a bench in the {place}.", "{he} went to eat it in the {place}."),
    see=_t("Then {he} saw {fname}, a {fkid} from {his} school.", "{fname} was sitting next to {him}."),
    hungry=_t("{fname} did not have any lunch, and {fhe} looked hungry.",
              "{fname} had no food and {fhe} was very hungry."),
    think=_t("{name} wanted to help {fhim}.", "{name} thought about it for a moment."),
    give=_t("So {name} broke the {food} in two and gave half to {fname}.",),
    end=_t("{fname} said thank you, and the two friends ate the {food} together.",
           "{fname} smiled, and they shared the {food} together."),
)
HELP = dict(
    walk=_t("One day, {name} was walking {in} the {place}.", "{name} went for a walk {in} the {place}."),
    see=_t("{he} saw {a_animal} {spot1}.", "Suddenly, {he} saw a little {animal} {spot1}."),
    hurt=_t("The {animal} was hurt and could not {move}.", "The poor {animal} could not {move}."),
    sorry=_t("{name} felt sorry for the {animal}.",),
    home=_t("{he} took it home and gave it some {afood}.", "{he} gave the {animal} some {afood} and water."),
    care=_t("{he} took care of the {animal} for many days.", "Every day, {he} was kind to the {animal}."),
    end=_t("At last, the {animal} could {move} again, and {name} was very happy.",
           "One day, the {animal} could {move} again, and {name} waved goodbye."),
)
BRAVE_T = dict(
    climb=_t("{name} wanted to climb the tall {x}.", "{name} looked up at the tall {x}."),
    swim=_t("{name} wanted to swim in the {x}.", "{name} looked at the deep {x}."),
    ride=_t("{name} wanted to ride the {x}.", "{name} had a new {x} but never had a ride."),
    scared=_t("But {he} was scared.", "{he} was scared and {his} legs were shaking."),
    think=_t("{he} thought that {he} could not do it.",),
    help=_t("{hname} told {him} to be brave.", "{hname} held {his} hand and smiled."),
    breath=_t("{name} took a deep breath.", "{name} counted to three."),
    end_climb=_t("{name} climbed to the top of the {x} and was very proud of {himself}.",),
    end_swim=_t("{name} jumped into the {x}, and {he} was very proud of {himself}.",),
    end_ride=_t("{name} rode the {x} all the way home and was proud of {himself}.",),
)
BUILD = dict(
    go=_t("One day, {name} and {fname} went to the {bplace}.", "{name} and {his} friend {fname} were at the {bplace}."),
    snow=_t("Snow was on the ground.",),
    want=_t("They wanted to build a big {thing}.", "{name} said they should build a big {thing}."),
    excited=_t("They were very excited.", "The two friends were ready to work."),
    find=_t("{name} found {mat1} and {fname} found {mat2}.", "They used {mat1} and {mat2}."),
    work=_t("They worked hard all day.", "It took a long time."),
    watch=_t("{a_animal} came to watch them.", "Two {animals} came to watch them."),
    end=_t("When the {thing} was done, {name} and {fname} were very proud.",
           "{name} and {fname} looked at the big {thing} and laughed."),
)
PLANT = dict(
    want=_t("{name} wanted to grow a {color} flower.", "{name} loved {color} flowers."),
    seed=_t("{his} {parent} gave {him} a little seed.",),
    plant=_t("{name} planted the seed in the garden.", "{he} put the seed in the ground."),
    water=_t("Every day, {he} gave it some water.", "{he} gave the seed water every morning."),
    wait=_t("{he} waited and waited.", "The sun was warm and the rain was soft."),
    end=_t("One morning, {name} saw a big {color} flower and smiled.",
           "Soon a pretty {color} flower grew, and {name} was happy."),
)
FRIEND = dict(
    new=_t("{name} was new at the {fplace}.", "{name} went to a new {fplace}."),
    lonely=_t("{he} did not know anyone and felt lonely.", "{he} was shy and sat alone."),
    see=_t("Then {he} saw a {fkid} named {fname} sitting alone.", "A {fkid} named {fname} was sitting alone too."),
    ask=_t("{name} asked {fname} to play {game}.",),
    yes=_t("{fname} smiled and said yes.",),
    play=_t("They played {game} all afternoon.", "They had so much fun together."),
    end=_t("From that day on, {name} and {fname} were best friends.",
           "After that day, {name} and {fname} played together every day.",
           "Now {name} and {fname} are best friends, and they have lots of fun."),
)
BAKE = dict(
    want=_t("{name} and {his} {parent} wanted to bake {bake}.",),
    get=_t("They got {ing1} and {ing2}.", "First, they got {ing1}, {ing2} and sugar."),
    mix=_t("{name} helped to mix everything in a big bowl.",),
    oven=_t("Then they put it in the oven.", "They waited while it was in the oven."),
    smell=_t("The {room} smelled so good.",),
    end=_t("{name} and {his} {parent} ate the warm {bake} together.",
           "{name} shared the {bake} with {his} {parent}, and it was very good."),
)
MESS = dict(
    paint=_t("{name} was painting a picture of {a_animal} in the {room}.",),
    spill=_t("By mistake, {he} spilled the {color} paint on the floor.", "Then {he} dropped the {color} paint."),
    upset=_t("{his} {parent} was upset.", "There was paint all over the floor."),
    sorry=_t("{name} said that {he} was sorry.",),
    clean=_t("{he} cleaned the floor all by {himself}.", "{he} got a cloth and cleaned it up."),
    end=_t("Then {name} gave {his} {parent} the picture of the {animal}, and {phe} smiled.",),
)


# ------------------------------------------------------------------------------------------ stories
class _Opt(str):
    """A template the story may drop to stay within MAX_SENTS sentences."""


@dataclass
class Story:
    """One story: prompt sentences, the ending template and its slot values (for cloze variants)."""
    prompt: list[str]
    ending_tpl: str
    ctx: dict
    swaps: dict = field(default_factory=dict)   # slot -> candidate values of the same class

    @property
    def ending(self) -> str:
        return _fmt(self.ending_tpl, self.ctx)

    @property
    def text(self) -> str:
        return " ".join(self.prompt + [self.ending])

    @property
    def prompt_text(self) -> str:
        return " ".join(self.prompt)

    def variant(self, slot: str, value: str) -> str:
        """The ending with one slot changed (names keep their gender, so the form is unchanged)."""
        return _fmt(self.ending_tpl, {**self.ctx, slot: value})


def _fmt(tpl: str, ctx: dict) -> str:
    s = tpl.format(**ctx)
    return s[0].upper() + s[1:]


def _main(rng: random.Random, exclude=()) -> dict:
    name = rng.choice([n for n in (GIRLS + BOYS) if n not in exclude] if exclude else GIRLS + BOYS)
    return {"name": name, **_pron(NAMES[name])}


def _friend(rng: random.Random, ctx: dict) -> dict:
    name = ctx["name"]
    while True:
        f = rng.choice(GIRLS + BOYS)
        if f != name:
            break
    out = {"fname": f}
    for k, v in _pron(NAMES[f]).items():
        out["f" + k] = v
    return out


def _same_gender(name: str) -> tuple[str, ...]:
    return GIRLS if NAMES[name] == "f" else BOYS


def _parent(rng: random.Random) -> tuple[str, str]:
    p = rng.choice(tuple(PARENTS))
    return p, ("he" if PARENTS[p] == "m" else "she")


def _plot_lost(rng, c, out):
    place = rng.choice(tuple(PLACES))
    spots = PLACES[place][0]
    s1, s2 = rng.sample(spots, 2)
    c.update(obj=rng.choice(OBJECTS), color=rng.choice(COLORS), place=place, spot1=s1, spot2=s2)
    T = LOST
    out += [rng.choice(T["own"]), rng.choice(T["go"])]
    if rng.random() < 0.4:
        out.append(_Opt(rng.choice(T["play"])))
    out.append(rng.choice(T["lose"]))
    if rng.random() < 0.5:
        out.append(_Opt(rng.choice(T["sad"])))
    out.append(rng.choice(T["look"]))
    swaps = {"obj": OBJECTS, "color": COLORS}
    kind = rng.choice(("kid", "pet", "parent", "self"))
    if kind == "kid":
        f = _friend(rng, c)
        c.update(hname=f["fname"], hhim=f["fhim"])
        out.append(rng.choice(T["helper_kid"]))
        end = rng.choice(T["end_kid"])
        swaps["hname"] = _same_gender(f["fname"])
    elif kind == "pet":
        c.update(hname=rng.choice(PETS), pet_kind=rng.choice(("dog", "cat", "puppy")))
        out.append(rng.choice(T["helper_pet"]))
        end = rng.choice(T["end_pet"])
        swaps["hname"] = PETS
    elif kind == "parent":
        p, _ = _parent(rng)
        c.update(hname=p.lower(), hhim="him" if PARENTS[p] == "m" else "her")
        out.append(rng.choice(T["helper_parent"]))
        end = rng.choice(T["end_self"])
    else:
        end = rng.choice(T["end_self"])
    return end, swaps


def _plot_weather(rng, c, out):
    w = rng.choice(tuple(WEATHER_CLOTHES))
    place = rng.choice(tuple(PLACE_ACTIVITY))
    p, _ = _parent(rng)
    c.update(cloth=rng.choice(WEATHER_CLOTHES[w]), place=place, activity=PLACE_ACTIVITY[place],
             parent=p.lower())
    T = WEATHER
    out += [rng.choice(T["wake"]), rng.choice(T[w]), rng.choice(T["want"])]
    out.append(rng.choice(T["tell"]) if rng.random() < 0.5 else rng.choice(T["warn"]))
    if rng.random() < 0.5:
        out.append(_Opt(rng.choice(T["ready"])))
    wrong = tuple(x for x in CLOTHES if x not in WEATHER_CLOTHES[w])
    return rng.choice(T["end"]), {"cloth": wrong, "place": tuple(PLACE_ACTIVITY)}


def _plot_share(rng, c, out):
    c.update(_friend(rng, c))
    food = rng.choice(FOODS)
    c.update(food=food, a_food=f"{_art(food)} {food}", place=rng.choice(("park", "garden", "playground")))
    T = SHARE
    out += [rng.choice(T["have"]), rng.choice(T["sit"]), rng.choice(T["see"]), rng.choice(T["hungry"])]
    if rng.random() < 0.5:
        out.append(_Opt(rng.choice(T["think"])))
    out.append(rng.choice(T["give"]))
    return rng.choice(T["end"]), {"food": FOODS, "fname": _same_gender(c["fname"])}


def _plot_help(rng, c, out):
    place = rng.choice(tuple(PLACES))
    animal = rng.choice(SMALL_ANIMALS)
    _, move, afood = ANIMALS[animal]
    c.update(place=place, animal=animal, a_animal=f"{_art(animal)} {animal}", move=move, afood=afood,
             **{"in": PLACE_IN.get(place, "in")},
             spot1=rng.choice(PLACES[place][0]))
    T = HELP
    out += [rng.choice(T["walk"]), rng.choice(T["see"]), rng.choice(T["hurt"])]
    if rng.random() < 0.4:
        out.append(_Opt(rng.choice(T["sorry"])))
    out.append(rng.choice(T["home"]))
    if rng.random() < 0.5:
        out.append(_Opt(rng.choice(T["care"])))
    return rng.choice(T["end"]), {"animal": SMALL_ANIMALS, "move": tuple(m for m in MOVES if m != move)}


def _plot_brave(rng, c, out):
    kind = rng.choice(tuple(BRAVE))
    c["x"] = rng.choice(BRAVE[kind])
    T = BRAVE_T
    out += [rng.choice(T[kind]), rng.choice(T["scared"])]
    if rng.random() < 0.4:
        out.append(_Opt(rng.choice(T["think"])))
    if rng.random() < 0.5:
        f = _friend(rng, c)
        c["hname"] = f["fname"]
    else:
        c["hname"] = rng.choice(tuple(PARENTS))
    out.append(rng.choice(T["help"]))
    if rng.random() < 0.5:
        out.append(_Opt(rng.choice(T["breath"])))
    return T["end_" + kind][0], {"x": BRAVE[kind]}


def _plot_build(rng, c, out):
    c.update(_friend(rng, c))
    bplace = rng.choice(tuple(THINGS))
    m1, m2 = rng.sample(MATERIALS[bplace], 2)
    c.update(bplace=bplace, thing=rng.choice(THINGS[bplace]), mat1=m1, mat2=m2)
    T = BUILD
    out.append(rng.choice(T["go"]))
    if bplace == "yard":
        out.append(T["snow"][0])
    out.append(rng.choice(T["want"]))
    if rng.random() < 0.5:
        out.append(_Opt(rng.choice(T["excited"])))
    out.append(rng.choice(T["find"]))
    if rng.random() < 0.5:
        out.append(_Opt(rng.choice(T["work"])))
    if rng.random() < 0.3:
        animal = rng.choice(tuple(ANIMALS))
        c.update(a_animal=f"{_art(animal)} {animal}", animals=ANIMALS[animal][0])
        out.append(_Opt(rng.choice(T["watch"])))
    things = tuple(sorted({t for ts in THINGS.values() for t in ts}))
    return rng.choice(T["end"]), {"thing": things, "fname": _same_gender(c["fname"])}


def _plot_plant(rng, c, out):
    p, _ = _parent(rng)
    c.update(color=rng.choice(COLORS), parent=p.lower())
    T = PLANT
    out += [rng.choice(T["want"]), rng.choice(T["seed"]), rng.choice(T["plant"]), rng.choice(T["water"])]
    if rng.random() < 0.5:
        out.append(_Opt(rng.choice(T["wait"])))
    return rng.choice(T["end"]), {"color": COLORS}


def _plot_friend(rng, c, out):
    c.update(_friend(rng, c))
    c.update(fplace=rng.choice(("school", "park", "playground", "beach")), game=rng.choice(GAMES))
    T = FRIEND
    out += [rng.choice(T["new"]), rng.choice(T["lonely"]), rng.choice(T["see"]), rng.choice(T["ask"]),
            rng.choice(T["yes"])]
    if rng.random() < 0.5:
        out.append(_Opt(rng.choice(T["play"])))
    return rng.choice(T["end"]), {"fname": _same_gender(c["fname"])}


def _plot_bake(rng, c, out):
    p, _ = _parent(rng)
    i1, i2 = rng.sample(INGREDIENTS[:2] + INGREDIENTS[3:], 2)
    c.update(parent=p.lower(), bake=rng.choice(BAKES), ing1=i1, ing2=i2, room="kitchen")
    T = BAKE
    out += [rng.choice(T["want"]), rng.choice(T["get"]), T["mix"][0], rng.choice(T["oven"])]
    if rng.random() < 0.5:
        out.append(_Opt(T["smell"][0]))
    return rng.choice(T["end"]), {"bake": BAKES}


def _plot_mess(rng, c, out):
    p, phe = _parent(rng)
    animal = rng.choice(tuple(ANIMALS))
    c.update(parent=p.lower(), phe=phe, animal=animal, a_animal=f"{_art(animal)} {animal}",
             room=rng.choice(ROOMS), color=rng.choice(COLORS))
    T = MESS
    out += [T["paint"][0], rng.choice(T["spill"]), rng.choice(T["upset"]), T["sorry"][0]]
    if rng.random() < 0.6:
        out.append(_Opt(rng.choice(T["clean"])))
    return T["end"][0], {"animal": tuple(ANIMALS)}


_PLOTS = (_plot_lost, _plot_weather, _plot_share, _plot_help, _plot_brave, _plot_build, _plot_plant,
          _plot_friend, _plot_bake, _plot_mess)


def _flavor(rng, c) -> str | None:
    """An optional scene sentence with a number-marked animal subject (agreement data)."""
    place = c.get("place")
    if place not in PLACES:
        return None
    animal = rng.choice(PLACES[place][1])
    pl, move, _ = ANIMALS[animal]
    d = {"place": place, "in": PLACE_IN.get(place, "in"), "animals": pl, "a_animal": f"{_art(animal)} {animal}", "move": move,
         "num": rng.choice(NUMS), "ing": rng.choice(DOINGS + (MOVE_ING[move],))}
    r = rng.random()
    tpl = rng.choice(FLAVOR_PL if r < 0.45 else FLAVOR_SG if r < 0.9 else FLAVOR_PRESENT)
    return _fmt(tpl, d)


def _one(rng: random.Random) -> Story:
    c = _main(rng)
    c["kadj"] = rng.choice(KID_ADJ)
    c["pet"] = rng.choice(PETS)
    c["pet_kind"] = rng.choice(("dog", "cat", "puppy", "kitten", "bunny"))
    c["hobby"] = rng.choice(HOBBIES).format(his=c["his"])
    out: list[str] = []
    if rng.random() < 0.75:
        out.append(rng.choice(BEGIN_PAST))
        if rng.random() < 0.35:
            out.append(_Opt(rng.choice(BEGIN_PAST2)))
    else:
        out += [rng.choice(BEGIN_PRESENT), rng.choice(BEGIN_PRESENT2)]
    plot = rng.choice(_PLOTS)
    end, swaps = plot(rng, c, out)
    items = [(_fmt(t, c), isinstance(t, _Opt)) for t in out]
    if rng.random() < 0.6:
        fl = _flavor(rng, c)
        if fl is not None:
            items.insert(min(len(items), rng.randint(2, 3)), (fl, True))
    while len(items) + 1 > MAX_SENTS:
        opt = [k for k, (_, o) in enumerate(items) if o]
        if not opt:
            break
        del items[rng.choice(opt)]
    prompt = [x for x, _ in items]
    swaps = dict(swaps)
    swaps.setdefault("name", _same_gender(c["name"]))
    return Story(prompt, end, c, swaps)


def prompt_hash(prompt_text: str) -> int:
    return zlib.crc32(prompt_text.encode("ascii"))


def is_heldout(prompt_text: str) -> bool:
    """True when a story with this prompt belongs to the held-out split (never emitted for training)."""
    return prompt_hash(prompt_text) % HELDOUT_MOD == 0


_WORD = re.compile(r"[A-Za-z]+")
_SENT = re.compile(r"(?<=[.!?]) ")


def words(text: str) -> list[str]:
    """Lowercase word tokens (punctuation dropped)."""
    return [w.lower() for w in _WORD.findall(text)]


def sentences(text: str) -> list[str]:
    return _SENT.split(text)


def iter_stories(seed: int, split: str = "train"):
    """An endless deterministic stream of `Story` objects of one split ("train", "heldout" or "all")."""
    if split not in ("train", "heldout", "all"):
        raise ValueError(f"split must be 'train', 'heldout' or 'all', got {split!r}")
    rng = random.Random(seed)
    while True:
        s = _one(rng)
        nw = sum(len(_WORD.findall(x)) for x in s.prompt) + len(_WORD.findall(s.ending))
        if not (MIN_WORDS <= nw <= MAX_WORDS and MIN_SENTS <= len(s.prompt) + 1 <= MAX_SENTS):
            continue
        if split != "all" and is_heldout(s.prompt_text) != (split == "heldout"):
            continue
        yield s


def generate_stories(n: int, seed: int, split: str = "train") -> list[str]:
    """`n` stories, deterministic in `seed`; `split="train"` (default) never yields a held-out prompt."""
    it = iter_stories(seed, split)
    return [next(it).text for _ in range(n)]


_LEXICON: list[str] | None = None


def lexicon() -> list[str]:
    """Sorted lowercase word types the grammar can emit (template literals and every filler pool)."""
    global _LEXICON
    if _LEXICON is None:
        ws = set(_FIELD_WORDS.split())
        for tpl in _REG:
            ws.update(words(re.sub(r"\{[^}]*\}", " ", tpl)))
        pools = [GIRLS, BOYS, PETS, tuple(PLACE_IN.values()), OBJECTS, COLORS, KID_ADJ, HOBBIES, CLOTHES, FOODS, BAKES, INGREDIENTS,
                 GAMES, ROOMS, tuple(PARENTS), tuple(PLACES), tuple(PLACE_ACTIVITY.values()), NUMS,
                 MOVES, tuple(MOVE_ING.values()), DOINGS, ("boy", "girl", "a", "an", "kitchen", "school")]
        pools += [s for s, _ in PLACES.values()]
        pools += list(BRAVE.values()) + list(THINGS.values()) + list(MATERIALS.values())
        for a, (pl, _, food) in ANIMALS.items():
            ws.update((a, pl, food))
        for p in pools:
            for x in p:
                ws.update(words(x))
        _LEXICON = sorted(ws)
    return list(_LEXICON)


LEXICON: tuple[str, ...] = tuple(lexicon())
