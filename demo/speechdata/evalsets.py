"""Evaluation pairs with known answers for the story grammar (`stories.py`), and their manifests.

- `wuggy_pairs`  (sWUGGY-like): a lexicon word vs a pronounceable non-word made by replacing one
  letter group (an onset, a vowel group, a medial cluster or a coda) with another group seen in the
  same position in lexicon words. "Pronounceable" is `pronounceable(w)`: every letter group of `w`
  occurs in that position (initial / medial / final, consonant or vowel) in some lexicon word. The
  non-word is not a lexicon word nor an inflection or stem of one, has no lexicon word with the same
  rough sound key (`sound_key`), and is within one letter of the word's length. It is a non-word of the
  grammar's language, the only language a demo model sees; no English dictionary ships offline, so
  some non-words are English words absent from the grammar (sea / "tea"): a limit for models
  initialised from a real TextLM.
- `blimp_pairs`  (sBLIMP-like): a sentence of a held-out story vs a minimal ungrammatical variant:
  subject-verb agreement (was/were, is/are, has/have, likes/like), determiner-noun number (a bird /
  a birds, two birds / two bird), pronoun case (he/him, she/her, they/them), reflexive gender
  (himself/herself: the antecedent is always the local subject, so the flip is ungrammatical) and a
  word-order swap (a determiner with the next word). One or two words differ.
- `cloze_pairs`  (sSC / tSC-like): a held-out story without its last sentence, its true last sentence,
  and either an adversarial ending (the same sentence with one slot changed to a value of the same class
  that the story never mentions: the object, its colour, a friend's or the hero's name (same gender),
  the animal, the place, the thing built, the food; or a semantic clash: clothes wrong for the weather,
  a move wrong for the animal) or, with `adversarial=False`, the last sentence of another held-out story.

- `episode_cloze_pairs` (what the demo's manifests use): the same two kinds of negative from short
  held-out episodes (`episodes.py`, about 20 words, about 150 units spoken), so prompt and ending fit a
  micro cell's context; `write_manifests` writes them in four forms (S->S, S->T, T->S, T->T) and
  `check_manifests` proves every pair fits the context and is held out.

Disjointness: cloze stories come from the held-out split of `stories.iter_stories` (CRC-32 of the prompt
== 0 mod `HELDOUT_MOD`), which `generate_stories(..., split="train")` never emits, for any seed.
BLiMP sentences also come from held-out stories (a short sentence may still occur in training text,
as in the real sBLIMP). `write_manifests` writes the JSONL manifests `scaling.evaluate.read_pairs` reads.
"""
from __future__ import annotations

import json
import os
import random
import re
from collections import Counter
from pathlib import Path
from typing import Callable

from . import episodes as EP
from . import stories as S

DEFAULT_SEED = 20_250
DEFAULT_N = 200

# ---------------------------------------------------------------------------------------------- wuggy
_VOWELS = set("aeiou")


def _classes(w: str) -> str:
    """'v' / 'c' per letter; y is a vowel after a consonant (happy, shy), else a consonant (yellow, boy)."""
    out = []
    for i, ch in enumerate(w):
        if ch in _VOWELS:
            out.append("v")
        elif ch == "y" and i > 0 and out[-1] == "c":
            out.append("v")
        else:
            out.append("c")
    return "".join(out)


def _groups(w: str) -> list[tuple[str, str, str]]:
    """(letters, 'c'/'v', position 'i'/'m'/'f') for each maximal consonant or vowel run."""
    cl = _classes(w)
    runs, i = [], 0
    while i < len(w):
        j = i
        while j < len(w) and cl[j] == cl[i]:
            j += 1
        runs.append([w[i:j], cl[i]])
        i = j
    n = len(runs)
    return [(r, c, "i" if k == 0 else "f" if k == n - 1 else "m") for k, (r, c) in enumerate(runs)]


_FUNCTION = set("""a an and at but by for from he her herself him himself his in into is it of on once
out she so that the then there they them to too up was were who with all any are be can could did do
had has have not off over very this while when what after""".split())


_WUGGY_WORDS: list[str] | None = None
WUGGY_REF_STORIES, WUGGY_MIN_COUNT = 3000, 10


def wuggy_words() -> list[str]:
    """Real words used for sWUGGY: lexicon words of 3+ letters, not function words or names, seen at
    least `WUGGY_MIN_COUNT` times in a fixed sample of `WUGGY_REF_STORIES` training stories (so a
    micro model has met each of them often enough)."""
    global _WUGGY_WORDS
    if _WUGGY_WORDS is None:
        names = {n.lower() for n in S.GIRLS + S.BOYS + S.PETS}
        freq = Counter(w for st in S.generate_stories(WUGGY_REF_STORIES, 0) for w in S.words(st))
        _WUGGY_WORDS = [w for w in S.LEXICON if len(w) >= 3 and w not in _FUNCTION and w not in names
                        and freq[w] >= WUGGY_MIN_COUNT]
    return list(_WUGGY_WORDS)


_STATS: dict | None = None


def _stats() -> dict:
    global _STATS
    if _STATS is None:
        groups = Counter()
        for w in S.LEXICON:
            groups.update((g, c, p) for g, c, p in _groups(w))
        keys = {sound_key(w) for w in S.LEXICON}
        _STATS = {"groups": groups, "keys": keys, "lex": set(S.LEXICON)}
    return _STATS


def pronounceable(w: str) -> bool:
    """Every letter group of `w` occurs at the same position (initial / medial / final) in a lexicon word,
    and no letter is tripled."""
    if not w.isalpha() or not w.islower() or re.search(r"(.)\1\1", w):
        return False
    g = _stats()["groups"]
    return all(x in g for x in _groups(w))


_KEY_RULES = [(r"^kn", "n"), (r"^wr", "r"), (r"^wh", "w"), (r"ck", "k"), (r"ph", "f"), (r"c(?=[eiy])", "s"),
              (r"[cq]", "k"), (r"x", "ks"), (r"(ee|ea|ie|ey)", "E"), (r"(ai|ay|ei)", "A"), (r"(oa|ow)", "O"),
              (r"(?<=[^aeiou])e$", ""), (r"(.)\1", r"\1"), (r"y$", "i")]


def sound_key(w: str) -> str:
    """A rough spelling-to-sound key: homophone-like spellings (kat/cat, sok/sock, bloo/blue?) collide."""
    for pat, rep in _KEY_RULES:
        w = re.sub(pat, rep, w)
    return w


_SUFFIXES = ("s", "es", "ed", "d", "ing", "y", "er")


def _lexical(w: str) -> bool:
    """`w` is a lexicon word or an inflection / stem of one (plant ~ planted, box ~ boxes)."""
    lex = _stats()["lex"]
    if w in lex:
        return True
    for suf in _SUFFIXES:
        if w + suf in lex or (w.endswith(suf) and len(w) > len(suf) + 2 and w[:-len(suf)] in lex):
            return True
    return False


def make_nonword(word: str, rng: random.Random, tries: int = 60) -> str | None:
    """A pronounceable non-word from `word` by replacing one letter group; None when none is found."""
    st = _stats()
    groups = _groups(word)
    pool: dict[tuple[str, str], list] = {}
    for _ in range(tries):
        k = rng.randrange(len(groups))
        g, c, p = groups[k]
        if (c, p) not in pool:
            cands = [(x, n) for (x, cc, pp), n in st["groups"].items() if cc == c and pp == p and x != g]
            cands.sort()
            pool[(c, p)] = cands
        cands = pool[(c, p)]
        if not cands:
            continue
        new = rng.choices([x for x, _ in cands], weights=[n for _, n in cands])[0]
        nw = "".join(new if i == k else gg for i, (gg, _, _) in enumerate(groups))
        if (abs(len(nw) - len(word)) <= 1 and not _lexical(nw) and sound_key(nw) not in st["keys"]
                and pronounceable(nw) and len(_groups(nw)) == len(groups)):
            return nw
    return None


def wuggy_pairs(n: int = DEFAULT_N, seed: int = DEFAULT_SEED) -> list[tuple[str, str, str]]:
    """(id, word, nonword) pairs; each word at most once while the word list lasts."""
    rng = random.Random(seed)
    ws = wuggy_words()
    out, seen = [], set()
    while len(out) < n:
        order = ws[:]
        rng.shuffle(order)
        for w in order:
            nw = make_nonword(w, rng)
            if nw is None or (w, nw) in seen:
                continue
            seen.add((w, nw))
            out.append((f"wuggy-{len(out):04d}", w, nw))
            if len(out) == n:
                break
    return out


# ---------------------------------------------------------------------------------------------- blimp
_TOK = re.compile(r"[A-Za-z]+|[.,!?]")
_AGREE = {"was": "were", "were": "was", "is": "are", "has": "have", "likes": "like"}
_CASE = {"he": "him", "him": "he", "she": "her", "they": "them", "them": "they"}
_REFL = {"himself": "herself", "herself": "himself"}
_SG2PL = {a: v[0] for a, v in S.ANIMALS.items()}
_PL2SG = {v: k for k, v in _SG2PL.items()}
_ADJ = set(S.COLORS) | set(S.KID_ADJ) | {"big", "little", "tall", "small", "new", "poor", "deep"}
_DET = {"the", "a", "an", "his", "her", "some", "two", "three", "four", "many"}
PHENOMENA = ("agreement", "determiner", "pronoun_case", "reflexive", "word_order")


def tokens(sentence: str) -> list[str]:
    return _TOK.findall(sentence)


def detok(toks: list[str]) -> str:
    s = " ".join(toks)
    s = re.sub(r" ([.,!?])", r"\1", s)
    return s[0].upper() + s[1:]


def _case_like(new: str, old: str) -> str:
    return new.capitalize() if old[0].isupper() else new


def _variants(toks: list[str]) -> dict[str, list[list[str]]]:
    """Ungrammatical minimal variants of one sentence, per phenomenon."""
    low = [t.lower() for t in toks]
    out: dict[str, list[list[str]]] = {p: [] for p in PHENOMENA}

    def sub(i, new):
        b = toks[:]
        b[i] = _case_like(new, toks[i])
        return b

    for i, t in enumerate(low):
        if t in _AGREE:
            out["agreement"].append(sub(i, _AGREE[t]))
        elif t == "like" and i > 0 and low[i - 1] in _PL2SG:
            out["agreement"].append(sub(i, "likes"))
        if t in _CASE:
            out["pronoun_case"].append(sub(i, _CASE[t]))
        if t in _REFL:
            out["reflexive"].append(sub(i, _REFL[t]))
        if t in ("a", "an"):
            j = i + 1
            while j < len(low) and low[j] in _ADJ:
                j += 1
            if j < len(low) and low[j] in _SG2PL:
                out["determiner"].append(sub(j, _SG2PL[low[j]]))
        if t in ("two", "three", "four", "some", "many") and i + 1 < len(low) and low[i + 1] in _PL2SG:
            out["determiner"].append(sub(i + 1, _PL2SG[low[i + 1]]))
        if (i >= 1 and t in _DET and i + 1 < len(low) and low[i + 1].isalpha() and low[i + 1] not in _DET
                and toks[i + 1] != toks[i + 1].capitalize()):
            b = toks[:]
            b[i], b[i + 1] = toks[i + 1], toks[i]
            out["word_order"].append(b)
    return out


def blimp_pairs(n: int = DEFAULT_N, seed: int = DEFAULT_SEED, exclude: set[str] = frozenset()
                ) -> list[tuple[str, str, str]]:
    """(id, good, bad) pairs, the phenomena in turn (`PHENOMENA`), good sentences from held-out stories
    that are not sentences of `exclude` (e.g. every sentence of the training texts)."""
    rng = random.Random(seed)
    quota = {p: n // len(PHENOMENA) + (1 if k < n % len(PHENOMENA) else 0) for k, p in enumerate(PHENOMENA)}
    got: dict[str, list[tuple[str, str]]] = {p: [] for p in PHENOMENA}
    seen: set[str] = set()
    stream = S.iter_stories(seed, "heldout")
    while any(len(got[p]) < quota[p] for p in PHENOMENA):
        story = next(stream)
        sents = story.prompt + [story.ending]
        rng.shuffle(sents)
        for sent in sents:   # at most one pair per story, from a random sentence of it
            if sent in seen or sent in exclude:
                continue
            toks = tokens(sent)
            vs = _variants(toks)
            avail = [p for p in PHENOMENA if vs[p] and len(got[p]) < quota[p]]
            if not avail:
                continue
            # the phenomenon furthest from its quota first, so the mix stays balanced
            p = min(avail, key=lambda q: (len(got[q]) / quota[q], PHENOMENA.index(q)))
            seen.add(sent)
            got[p].append((sent, detok(rng.choice(vs[p]))))
            break
    out = []
    for p in PHENOMENA:
        for k, (good, bad) in enumerate(got[p]):
            out.append((f"blimp-{p}-{k:04d}", good, bad))
    return out


# ---------------------------------------------------------------------------------------------- cloze
_SEMANTIC = {"cloth", "move"}   # slots whose wrong value clashes by meaning, not by a mention


def _adversarial(story: S.Story, rng: random.Random) -> str | None:
    prompt_words = set(S.words(story.prompt_text))
    usable = []
    for slot, pool in sorted(story.swaps.items()):
        if "{" + slot + "}" not in story.ending_tpl:
            continue
        cur = str(story.ctx[slot])
        grounded = all(w in prompt_words for w in S.words(cur))
        if not (grounded or slot in _SEMANTIC):
            continue
        cands = [v for v in pool if v != cur and not any(w in prompt_words for w in S.words(v))]
        if cands:
            usable.append((slot, cands))
    if not usable:
        return None
    # every ending names the hero: let the story-specific slots (object, friend, animal ...) dominate
    weights = [0.25 if slot == "name" and len(usable) > 1 else 1.0 for slot, _ in usable]
    slot, cands = rng.choices(usable, weights=weights)[0]
    return story.variant(slot, rng.choice(cands))


def cloze_pairs(n: int = DEFAULT_N, seed: int = DEFAULT_SEED, adversarial: bool = True
                ) -> list[tuple[str, str, str, str]]:
    """(id, prompt, true_ending, other_ending) from held-out stories (never training prompts).

    The same `seed` gives the same prompts and true endings for both kinds of `other_ending`."""
    rng = random.Random(seed * 2 + 1)
    stream = S.iter_stories(seed, "heldout")
    stories, prompts = [], set()
    while len(stories) < n:
        s = next(stream)
        if s.prompt_text in prompts or _adversarial(s, random.Random(0)) is None:
            continue
        prompts.add(s.prompt_text)
        stories.append(s)
    out = []
    for k, s in enumerate(stories):
        if adversarial:
            other = _adversarial(s, rng)
        else:
            other = s.ending
            while other == s.ending:
                other = stories[rng.randrange(n)].ending if n > 1 else next(stream).ending
        out.append((f"cloze-{k:04d}", s.prompt_text, s.ending, other))
    return out


# ------------------------------------------------------------------------------------------ manifests
def _units(speak: Callable[[str], list[int]], text: str) -> list[int]:
    u = speak(text)
    if not isinstance(u, (list, tuple)) or not u:
        raise ValueError(f"speak({text[:40]!r}) returned no units")
    return [int(x) for x in u]


def _write_jsonl(path: Path, rows: list[dict]) -> None:
    tmp = path.with_name(path.name + f".tmp{os.getpid()}")
    with open(tmp, "w") as f:
        for r in rows:
            f.write(json.dumps(r, separators=(",", ":")) + "\n")
    os.replace(tmp, path)


FORMS = ("ss", "st", "ts", "tt")   # prompt modality, ending modality: s speech, t text
CLOZE = ("tsc", "ssc")


def episode_cloze_pairs(n: int = DEFAULT_N, seed: int = DEFAULT_SEED
                        ) -> list[tuple[str, str, str, str, str]]:
    """(id, prompt, true ending, random ending, adversarial ending) from held-out episodes
    (`episodes.py`): the tSC negative is the ending of another held-out episode of the same kind (so
    both endings are equally likely without the prompt), the sSC negative is the true ending with one
    slot changed to contradict the prompt. Prompts are distinct and never training prompts."""
    rng = random.Random(seed * 2 + 1)
    stream = EP.iter_episodes(seed, "heldout")
    eps, prompts = [], set()
    while len(eps) < n:
        e = next(stream)
        if e.prompt in prompts or EP.adversarial_ending(e, random.Random(0)) is None:
            continue
        prompts.add(e.prompt)
        eps.append(e)
    by_kind: dict[str, list[int]] = {}
    for k, e in enumerate(eps):
        by_kind.setdefault(e.kind, []).append(k)
    out = []
    for k, e in enumerate(eps):
        same = [j for j in by_kind[e.kind] if eps[j].ending != e.ending]
        rnd = eps[rng.choice(same)].ending if same else next(x for x in eps if x.ending != e.ending).ending
        out.append((f"cloze-{k:04d}", e.prompt, e.ending, rnd, EP.adversarial_ending(e, rng)))
    return out


def item_length(item: dict) -> int:
    """An upper bound on the tokens of a manifest item: its units, or the UTF-8 bytes of its text (a
    byte-level BPE token holds at least one byte)."""
    return len(item["units"]) if "units" in item else len(item["text"].encode())


def pair_length(row: dict) -> int:
    """An upper bound on the tokens a pair's longer side puts in the model: prompt + continuation + a
    marker before each (what `scaling.evaluate.pair_sequences` builds)."""
    p = item_length(row["prompt"]) + 1 if "prompt" in row else 0
    return p + max(item_length(row["positive"]), item_length(row["negative"])) + 1 + 1


def write_manifests(out_dir: str | Path, speak: Callable[[str], list[int]] | None,
                    n: int = DEFAULT_N, seed: int = DEFAULT_SEED, exclude: set[str] = frozenset()
                    ) -> dict[str, Path]:
    """Write the pair manifests into `out_dir` and return {name: path}.

    Story cloze from held-out episodes in four forms each, the same stories throughout: `tsc_<form>`
    (random ending) and `ssc_<form>` (adversarial ending), form `ss` (spoken prompt and endings), `st`
    (spoken prompt, text endings), `ts` (text prompt, spoken endings), `tt` (text only). Spoken probes
    `swuggy` and `sblimp` (sBLIMP sentences from held-out stories, none of them a sentence of the
    `exclude` texts: the training corpora). With `speak=None` only the text-only forms are written.
    Each file is written to a temporary name and renamed, so a reader never sees a partial manifest. A
    spoken sWUGGY pair whose word and non-word give the same units is replaced by another pair."""
    out_dir = Path(out_dir)
    out_dir.mkdir(parents=True, exist_ok=True)
    rows: dict[str, list[dict]] = {}
    cloze = episode_cloze_pairs(n, seed)
    cache: dict[str, list[int]] = {}

    def U(text: str) -> list[int]:
        if text not in cache:
            cache[text] = _units(speak, text)
        return cache[text]

    def item(text: str, mod: str, ending: bool = False) -> dict:
        # a text ending continues the prompt after a space, as text follows text or speech in training
        # (word alignments carry the space before each word): " At the park, ..."
        return {"units": U(text)} if mod == "s" else {"text": " " + text if ending else text}

    forms = FORMS if speak is not None else ("tt",)
    for bench, neg in (("tsc", 3), ("ssc", 4)):
        for form in forms:
            rows[f"{bench}_{form}"] = [{"id": c[0], "prompt": item(c[1], form[0]),
                                        "positive": item(c[2], form[1], True),
                                        "negative": item(c[neg], form[1], True)} for c in cloze]
    if speak is not None:
        ws = []
        for i, w, nw in wuggy_pairs(2 * n, seed):
            if U(w) != U(nw):
                ws.append({"id": f"wuggy-{len(ws):04d}", "positive": {"units": U(w)}, "negative": {"units": U(nw)}})
            if len(ws) == n:
                break
        rows["swuggy"] = ws
        rows["sblimp"] = [{"id": i, "positive": {"units": U(g)}, "negative": {"units": U(b)}}
                          for i, g, b in blimp_pairs(n, seed, exclude=exclude)]
    paths = {}
    for name, rs in rows.items():
        path = out_dir / f"{name}.jsonl"
        _write_jsonl(path, rs)
        paths[name] = path
    return paths


def check_manifests(paths: dict[str, Path], context: int, training_texts: list[str], spare: float = 0.1) -> dict:
    """Prove the evaluation sets fit and are held out; returns {name: {"pairs", "longest"}} and the
    context, or raises ValueError naming the first item that does not.

    Fits: every pair (prompt + the longer continuation + a marker before each, `pair_length`, an upper
    bound) fits in `context` with `spare` of it left over. Held out: no cloze prompt and no sBLIMP
    sentence occurs in `training_texts` (the demo's text and spoken corpora), read back from the
    manifests' text forms (`*_tt`, and the texts the spoken items were made from are the same)."""
    limit = int(context * (1 - spare))
    out: dict = {"context": context, "limit": limit, "sets": {}}
    corpus = "\n".join(training_texts)
    for name, path in sorted(paths.items()):
        rows = [json.loads(x) for x in Path(path).read_text().splitlines() if x.strip()]
        longest = max(pair_length(r) for r in rows)
        if longest > limit:
            r = max(rows, key=pair_length)
            raise ValueError(f"{path}: pair {r['id']!r} is up to {pair_length(r)} tokens; the cells' context is "
                             f"{context} and items must fit in {limit} (10% to spare)")
        if name.endswith("_tt"):
            for r in rows:
                if r["prompt"]["text"] in corpus:
                    raise ValueError(f"{path}: pair {r['id']!r}: its prompt occurs in the training text")
        out["sets"][name] = {"pairs": len(rows), "longest": longest}
    return out


def sentences_of(texts: list[str]) -> set[str]:
    """Every sentence of `texts` (what `blimp_pairs(exclude=...)` keeps out of sBLIMP)."""
    return {x for t in texts for x in S.sentences(t)}
