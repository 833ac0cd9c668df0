"""The text side of the offline speech corpus: the story grammar and its evaluation pairs."""
import math
import re
import time
from collections import Counter

import pytest

from scaling.evaluate import read_pairs
from demo.speechdata import evalsets as E
from demo.speechdata import stories as S

TRAIN_SEED = 0
N_TRAIN = 10_000


@pytest.fixture(scope="module")
def train():
    t = time.perf_counter()
    xs = S.generate_stories(N_TRAIN, TRAIN_SEED)
    return xs, time.perf_counter() - t


def _tok(s: str) -> list[str]:
    return re.findall(r"[a-z]+|[.,!?]", s.lower())


def _fake_speak(text: str) -> list[int]:
    """Deterministic stand-in for the speech builder: letters -> ids, runs deduplicated."""
    ids = [(ord(c) * 37 + 11) % 500 for c in text.lower() if c.isalpha()]
    return [u for k, u in enumerate(ids) if k == 0 or u != ids[k - 1]]


def test_stories_deterministic_fast_and_seeded(train):
    xs, secs = train
    assert secs < 20, f"{N_TRAIN} stories took {secs:.1f} s"
    assert S.generate_stories(50, TRAIN_SEED) == xs[:50]
    assert S.generate_stories(50, TRAIN_SEED + 1) != xs[:50]
    assert len(set(xs)) > 0.99 * len(xs)


def test_story_bounds_and_closed_vocabulary(train):
    xs, _ = train
    lex = set(S.LEXICON)
    assert S.lexicon() == list(S.LEXICON) and 300 <= len(lex) <= 1500
    seen = Counter()
    for x in xs:
        assert re.fullmatch(r"[A-Za-z ,.!]+", x), x
        assert S.MIN_SENTS <= len(S.sentences(x)) <= S.MAX_SENTS, x
        ws = S.words(x)
        assert S.MIN_WORDS <= len(ws) <= S.MAX_WORDS, x
        seen.update(ws)
    assert set(seen) <= lex, sorted(set(seen) - lex)[:10]
    assert len(seen) >= 0.97 * len(lex), sorted(lex - set(seen))  # the lexicon is not padded


def test_stories_agree_in_gender(train):
    xs, _ = train
    for x in xs[:3000]:
        for s in S.sentences(x):
            names = [w for w in re.findall(r"[A-Z][a-z]+", s) if w in S.NAMES]
            refl = re.findall(r"\b(himself|herself)\b", s)
            if len(set(names)) == 1 and refl:
                want = "himself" if S.NAMES[names[0]] == "m" else "herself"
                assert set(refl) == {want}, s


def test_heldout_split_is_disjoint(train):
    xs, _ = train
    train_prompts = {" ".join(S.sentences(x)[:-1]) for x in xs}
    assert not any(S.is_heldout(p) for p in train_prompts)
    cl = E.cloze_pairs(200, E.DEFAULT_SEED, adversarial=True)
    assert all(S.is_heldout(p) for _, p, _, _ in cl)
    assert not {p for _, p, _, _ in cl} & train_prompts
    assert not {p + " " + t for _, p, t, _ in cl} & set(xs)
    held = S.generate_stories(20, 5, split="heldout")
    assert all(S.is_heldout(" ".join(S.sentences(x)[:-1])) for x in held)


def test_wuggy_pairs():
    pairs = E.wuggy_pairs(300, 7)
    assert pairs == E.wuggy_pairs(300, 7) and pairs != E.wuggy_pairs(300, 8)
    lex = set(S.LEXICON)
    keys = {E.sound_key(x) for x in lex}
    assert len({i for i, _, _ in pairs}) == 300
    for _, w, nw in pairs:
        assert w in lex and w != nw
        assert nw not in lex and nw.isalpha() and nw.islower()
        assert abs(len(w) - len(nw)) <= 1
        assert E.pronounceable(nw) and E.pronounceable(w)
        assert E.sound_key(nw) not in keys                 # no rough homophone of a lexicon word
    assert not E.pronounceable("xqzt") and not E.pronounceable("bnnng")


def test_blimp_pairs_are_minimal():
    pairs = E.blimp_pairs(200, 3)
    assert pairs == E.blimp_pairs(200, 3)
    lex = set(S.LEXICON)
    per = Counter(i.split("-")[1] for i, _, _ in pairs)
    assert set(per) == set(E.PHENOMENA) and min(per.values()) == 40
    for i, good, bad in pairs:
        g, b = E.tokens(good), E.tokens(bad)
        assert good != bad and len(g) == len(b)
        diff = sum(x != y for x, y in zip(g, b))
        assert 1 <= diff <= 2, (good, bad)
        assert set(S.words(bad)) <= lex, bad          # no out-of-vocabulary shortcut
        assert Counter(w.lower() for w in g) == Counter(w.lower() for w in b) or diff == 1


def test_cloze_pairs():
    adv = E.cloze_pairs(150, 11, adversarial=True)
    rnd = E.cloze_pairs(150, 11, adversarial=False)
    assert adv == E.cloze_pairs(150, 11, adversarial=True)
    assert [a[:3] for a in adv] == [r[:3] for r in rnd]     # same prompts and true endings
    endings = {t for _, _, t, _ in adv}
    for (_, p, t, o), (_, _, _, r) in zip(adv, rnd):
        assert o != t and r != t and r in endings
        tw, ow = S.words(t), S.words(o)
        assert len(tw) == len(ow) and 1 <= sum(x != y for x, y in zip(tw, ow)) <= 2
        assert S.sentences(p + " " + t)[-1] == t


def test_manifests_parse(tmp_path):
    paths = E.write_manifests(tmp_path, _fake_speak, n=30, seed=2)
    cloze = {f"{b}_{f}" for b in E.CLOZE for f in E.FORMS}
    assert set(paths) == {"swuggy", "sblimp"} | cloze
    assert sorted(p.name for p in tmp_path.iterdir()) == sorted(p.name for p in paths.values())
    for name, path in paths.items():
        pairs = read_pairs(path, 500)
        assert len(pairs) == 30
        if name in cloze:   # <bench>_<prompt modality><ending modality>
            pm, em = ("speech" if c == "s" else "text" for c in name[-2:])
            assert all(p["prompt"][0] == pm and p["positive"][0] == em == p["negative"][0] for p in pairs)
        else:
            assert all("prompt" not in p and p["positive"][0] == "speech" for p in pairs)
    text_only = E.write_manifests(tmp_path / "t", None, n=10)
    assert set(text_only) == {"tsc_tt", "ssc_tt"}


def test_sets_are_learnable(train):
    """A word-bigram model (add-one) of 2,000 stories already finds the sBLIMP signal; with a cache of the
    prompt's words it finds the cloze signal, while the bigram alone is at chance on adversarial
    endings (they are as locally plausible as the true ones: the test needs the context)."""
    xs, _ = train
    uni, bi = Counter(), Counter()
    for x in xs[:2000]:
        t = ["<s>"] + _tok(x)
        uni.update(t[:-1])
        bi.update(zip(t, t[1:]))
    V = len(uni) + 2

    def score(prompt, cont, lam=1.0):
        p = ["<s>"] + _tok(prompt)
        cache, n = Counter(p[1:]), max(1, len(p) - 1)
        tot, prev = 0.0, p[-1]
        for w in _tok(cont):
            pr = lam * (bi[(prev, w)] + 1) / (uni[prev] + V) + (1 - lam) * cache[w] / n
            tot, prev = tot + math.log(pr), w
        return tot / len(_tok(cont))   # length-normalised, as scaling.evaluate scores

    def acc(pairs, lam=1.0):
        return sum(score(p, a, lam) > score(p, b, lam) for p, a, b in pairs) / len(pairs)

    blimp = E.blimp_pairs(200)
    b = acc([("", g, x) for _, g, x in blimp])
    adv = [(p, t, o) for _, p, t, o in E.cloze_pairs(200, adversarial=True)]
    rnd = [(p, t, o) for _, p, t, o in E.cloze_pairs(200, adversarial=False)]
    res = {"blimp": b, "adv_bigram": acc(adv), "adv_cache": acc(adv, 0.5), "rnd_cache": acc(rnd, 0.5)}
    assert res["blimp"] >= 0.8, res
    assert res["adv_cache"] >= 0.8 and res["rnd_cache"] >= 0.75, res
    assert res["adv_bigram"] <= 0.65, res
    # sWUGGY: every word is frequent in training text, no non-word ever occurs there
    seen = Counter(w for x in xs[:2000] for w in S.words(x))
    wug = E.wuggy_pairs(200)
    assert all(seen[w] > 0 for _, w, _ in wug) and not any(seen[n] for _, _, n in wug)
