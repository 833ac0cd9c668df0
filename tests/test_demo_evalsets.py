"""The demo's evaluation sets fit the cells' context with room to spare and are held out from the
training text and speech (issue 19): built here with real eSpeak units, as the demo builds them."""
import json
import random

import pytest

from demo.stages import DEFAULT_STUDY, DemoSpec
from demo.speechdata import episodes as EP
from demo.speechdata import evalsets as E
from demo.speechdata import stories as S
from demo.speechdata.build import build_speech_corpus
from sweeps.study import load_study


def _training_texts(spec: DemoSpec) -> list[str]:
    """The demo's text and spoken corpora (stage 1), from the default settings."""
    return (S.generate_stories(spec.text_stories + spec.speech_stories, spec.seed)
            + EP.generate_episodes(spec.text_episodes + spec.speech_episodes, spec.seed))


@pytest.fixture(scope="module")
def speech(tmp_path_factory):
    texts = EP.generate_episodes(30, 1) + S.generate_stories(10, 1)
    return build_speech_corpus(texts, tmp_path_factory.mktemp("sp") / "speech", units=100, seed=0,
                               val_fraction=0, progress=lambda _: None)


def test_every_item_fits_the_context_and_is_held_out(speech, tmp_path):
    spec = DemoSpec()
    context = load_study(DEFAULT_STUDY).training.context
    training = _training_texts(spec)
    paths = E.write_manifests(tmp_path, speech.speak, n=40, seed=spec.seed, exclude=E.sentences_of(training))
    assert set(paths) == {"swuggy", "sblimp"} | {f"{b}_{f}" for b in E.CLOZE for f in E.FORMS}
    checked = E.check_manifests(paths, context, training)
    for name, v in checked["sets"].items():
        assert v["pairs"] == 40 and v["longest"] <= 0.9 * context, (name, v)
    # spoken items are the units the corpus' voice gives: a story-cloze pair is ~150 of 256 tokens
    assert 60 < checked["sets"]["tsc_ss"]["longest"] <= checked["limit"]
    corpus = "\n".join(training)
    sents = E.sentences_of(training)
    for row in map(json.loads, paths["tsc_tt"].read_text().splitlines()):
        assert row["prompt"]["text"] not in corpus
        assert S.is_heldout(row["prompt"]["text"])
    for _, good, _bad in E.blimp_pairs(40, spec.seed, exclude=sents):
        assert good not in sents


def test_check_refuses_an_item_that_does_not_fit(speech, tmp_path):
    paths = E.write_manifests(tmp_path, speech.speak, n=5, seed=0)
    with pytest.raises(ValueError, match="context is 64"):
        E.check_manifests(paths, 64, [])
    text = json.loads(paths["tsc_tt"].read_text().splitlines()[0])["prompt"]["text"]
    with pytest.raises(ValueError, match="occurs in the training text"):
        E.check_manifests({"tsc_tt": paths["tsc_tt"]}, 256, ["x " + text + " y"])


def test_five_hundred_held_out_pairs_per_benchmark():
    """The default sets: 500 distinct held-out stories, the same in every form; the sSC negative
    contradicts the prompt in one slot, the tSC negative is another story's ending of the same kind."""
    pairs = E.episode_cloze_pairs(DemoSpec().eval_pairs, 0)
    assert len(pairs) == 500 and len({p for _, p, *_ in pairs}) == 500
    train_prompts = set()
    for e in (next(it) for it in [EP.iter_episodes(0)] for _ in range(20000)):
        train_prompts.add(e.prompt)
    for _, prompt, true, rnd, adv in pairs:
        assert prompt not in train_prompts and S.is_heldout(prompt)
        assert rnd != true and adv != true
        tw, aw = S.words(true), S.words(adv)
        assert len(tw) == len(aw) and sum(x != y for x, y in zip(tw, aw)) == 1
    assert len(E.blimp_pairs(500, 0)) == 500 and len(E.wuggy_pairs(1000, 0)) == 1000
    rng = random.Random(0)
    assert all(EP.adversarial_ending(e, rng) for e in (next(EP.iter_episodes(3)) for _ in range(50)))
