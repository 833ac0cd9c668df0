"""The offline speech corpus builder: eSpeak NG word times, 25 Hz units, SlamKit rows the training cell
reads, determinism, and the HuBERT unitizer path with a tiny random model."""
import json
import random

import numpy as np
import pytest

from scaling import corpus as corpus_mod
from scaling.errors import InputError
from demo.speechdata.build import build_speech_corpus
from demo.speechdata.features import logmel_25hz
from demo.speechdata.tts import VOICES, Espeak, voice_for
from demo.speechdata.units import HubertUnitizer, dedup, pool_frames

SUBJECTS = "the cat|a little dog|my old friend|the happy children|a small bird|the farmer|our teacher".split("|")
VERBS = "saw|found|liked|carried|painted|followed|heard".split("|")
OBJECTS = ("a red ball|the big tree|some water|the river in the valley|an old house|the moon at night|"
           "a blue boat").split("|")


def sentences(n: int, seed: int = 0) -> list[str]:
    rng = random.Random(seed)
    return [f"{rng.choice(SUBJECTS).capitalize()} {rng.choice(VERBS)} {rng.choice(OBJECTS)}." for _ in range(n)]


@pytest.fixture(scope="module")
def tts():
    return Espeak()


@pytest.fixture(scope="module")
def built(tmp_path_factory):
    out = tmp_path_factory.mktemp("speech") / "corpus"
    lines = []
    b = build_speech_corpus(sentences(100), out, units=100, seed=0, val_fraction=0.1, progress=lines.append)
    return b, lines


# ---------------------------------------------------------------- synthesis and word times

def test_word_times_tile_the_audio(tts):
    text = "Once upon a time, in the little house there were three cats sitting in the sun."
    utt = tts.synthesize(text, voice="en-us", rate=175)
    assert utt.pcm.dtype == np.int16 and utt.sample_rate == 22050 and utt.duration > 2
    assert [w.strip() for w, _, _ in utt.words] == text.split()
    assert utt.words[0][0] == "Once" and all(w.startswith(" ") for w, _, _ in utt.words[1:])
    starts = [s for _, s, _ in utt.words]
    ends = [e for _, _, e in utt.words]
    assert starts[0] == 0.0 and ends[-1] == pytest.approx(utt.duration, abs=1e-4)
    assert all(e > s for s, e in zip(starts, ends))                 # every word, "the" after "in" too
    assert starts == sorted(starts) and ends[:-1] == starts[1:]      # monotone and tiling
    # the side-car reader accepts them as they are
    align = corpus_mod.parse_alignment({"file_name": "x.wav", "aligned_text": [list(w) for w in utt.words]}, "t")
    assert align.text == text


def test_synthesis_is_a_pure_function_of_its_arguments(tts):
    a = tts.synthesize("The farmer saw a red ball.", voice="en-us+f3", rate=160)
    tts.synthesize("Something else in between, to move any state the library keeps.", voice="en+m3", rate=190)
    b = tts.synthesize("The farmer saw a red ball.", voice="en-us+f3", rate=160)
    assert np.array_equal(a.pcm, b.pcm) and a.words == b.words
    slow = tts.synthesize("The farmer saw a red ball.", voice="en-us+f3", rate=120)
    assert slow.duration > a.duration * 1.15
    assert voice_for(3, 7) == voice_for(3, 7) and voice_for(3, 7)[0] in VOICES
    assert len({voice_for(0, i) for i in range(50)}) > 10             # voices and rates vary per utterance


def test_synthesis_refuses_bad_input(tts):
    with pytest.raises(InputError, match="voice 'xx-nope'"):
        tts.synthesize("hello", voice="xx-nope")
    with pytest.raises(InputError, match="rate"):
        tts.synthesize("hello", rate=5)
    with pytest.raises(InputError, match="at least one word"):
        tts.synthesize("  \n ")


# ---------------------------------------------------------------- features and units

def test_logmel_frames_are_40ms():
    pcm = (np.sin(np.arange(22050 * 3) * 0.05) * 8000).astype(np.int16)
    f = logmel_25hz(pcm[:22050 * 2], 22050)                                # 2 s
    assert f.dtype == np.float32 and f.shape == (50, 40)
    assert np.allclose(f.mean(axis=0), 0, atol=1e-3)                      # per-utterance CMVN
    assert logmel_25hz(pcm[:22050 * 2 + 100], 22050).shape[0] == 51      # ceil(duration / 40 ms)


def test_dedup_invariants():
    rng = np.random.default_rng(0)
    ids = np.repeat(rng.integers(0, 5, 200), rng.integers(1, 4, 200))
    units, duration = dedup(ids)
    assert all(a != b for a, b in zip(units, units[1:]))
    assert sum(duration) == len(ids) and min(duration) >= 1
    starts = np.cumsum([0] + duration[:-1])
    assert [int(ids[s]) for s in starts] == units                           # each run's first frame
    assert np.array_equal(np.repeat(units, duration), ids)
    assert dedup([]) == ([], []) and dedup([4, 4, 4]) == ([4], [3])
    assert pool_frames(np.arange(10.0).reshape(5, 2), 2).tolist() == [[1, 2], [5, 6], [8, 9]]


# ---------------------------------------------------------------- the built corpus

def test_corpus_rows_round_trip(built):
    b, lines = built
    assert b.n_train + b.n_val == 100 and b.n_val == 10
    assert 15 <= b.units_per_second <= 35, b.units_per_second
    assert any("audio-s/s" in l and "ETA" in l for l in lines)
    rows = list(corpus_mod.read_units(b.units_path, 100)) + list(corpus_mod.read_units(b.val_units_path, 100))
    aligns = corpus_mod.read_alignments(b.alignments)
    assert len(rows) == 100 == len(aligns)
    texts = set(sentences(100))
    for row in rows:
        assert all(u != v for u, v in zip(row.units, row.units[1:]))
        align = aligns[corpus_mod.alignment_key(row.file_name)]
        assert align.text in texts
        audio_end = align.words[-1][2]
        assert abs(sum(row.duration) * corpus_mod.FRAME_S - audio_end) < 0.041  # frames cover the audio
    assert np.load(b.centroids).shape == (100, 40)
    meta = json.loads((b.out_dir / "speech_corpus.json").read_text())
    assert meta["n_units"] == 100 and meta["audio_seconds"] == pytest.approx(b.hours * 3600)
    assert [c["split"] for c in b.corpora()] == ["train", "val"]
    assert not [p for p in b.out_dir.parent.iterdir() if p.name.startswith(".")]  # no tmp folder left

    units = b.speak("The cat saw the moon at night.")
    assert units == b.speak("The cat saw the moon at night.") and all(0 <= u < 100 for u in units)
    assert all(u != v for u, v in zip(units, units[1:]))


def test_same_seed_same_files_and_reuse(built, tmp_path):
    b, _ = built
    lines = []
    again = build_speech_corpus(sentences(100), tmp_path / "again", units=100, seed=0, val_fraction=0.1,
                                progress=lines.append, workers=1)            # in-process, no pool
    for name in ("units.jsonl", "units_val.jsonl", "kmeans.npy", "align/tts0000042.json"):
        assert (again.out_dir / name).read_bytes() == (b.out_dir / name).read_bytes(), name
    stamp = again.units_path.stat().st_mtime_ns
    reused = build_speech_corpus(sentences(100), tmp_path / "again", units=100, seed=0, val_fraction=0.1,
                                 progress=lines.append)
    assert "reusing" in lines[-1] and reused.units_path.stat().st_mtime_ns == stamp
    assert reused.speak("A small bird.") == b.speak("A small bird.")


def test_training_reader_interleaves_the_corpus(built, tmp_path):
    from fixtures_data import make_tokenizer
    from scaling.config import Corpus, DataConfig, StreamMix
    from scaling.data import prepare
    from scaling.vocab import build_vocab

    b, _ = built
    tok = make_tokenizer(tmp_path / "tok", sentences(200, seed=1))
    vocab = build_vocab("interleaved", 512, 100, str(tok))
    data = DataConfig(units=100, corpora=[Corpus(**c) for c in b.corpora()],
                      mix=StreamMix(text=0.0, interleaved=0.5, speech=0.5))
    packed = prepare(vocab, data, context=32, seed=0, val_tokens=64, cache_root=tmp_path / "cache")
    inter = np.asarray(packed.train["interleaved"])
    is_unit = (inter >= vocab.unit_base) & (inter < vocab.unit_base + 100)
    assert is_unit.any() and (~is_unit).any()                               # speech and text together
    assert (inter == vocab.speech_id).any() and (inter == vocab.text_id).any()
    assert packed.windows("speech") > 0 and packed.val["interleaved"].size > 0  # the val corpus is used


# ---------------------------------------------------------------- HuBERT units and refusals

def test_hubert_unitizer_rows(tmp_path):
    from transformers import HubertConfig, HubertModel

    cfg = HubertConfig(hidden_size=32, num_hidden_layers=2, num_attention_heads=2, intermediate_size=64,
                       conv_dim=(16, 16, 16, 16), conv_stride=(5, 4, 4, 4), conv_kernel=(10, 4, 4, 4),
                       num_conv_pos_embeddings=16, num_conv_pos_embedding_groups=4)   # 50 Hz frames
    HubertModel(cfg).save_pretrained(tmp_path / "hubert")
    np.save(tmp_path / "km.npy", np.random.default_rng(0).standard_normal((20, 32)).astype(np.float32))
    unitizer = HubertUnitizer(tmp_path / "hubert", tmp_path / "km.npy")
    assert unitizer.layer == 2 and unitizer.pool == 2                       # last layer; 50 Hz pooled to 25 Hz
    b = build_speech_corpus(sentences(4), tmp_path / "hub", units=20, unitizer=unitizer, val_fraction=0,
                            progress=lambda _: None)
    rows = list(corpus_mod.read_units(b.units_path, 20))
    aligns = corpus_mod.read_alignments(b.alignments)
    assert len(rows) == 4 and b.val_units_path is None and b.centroids is None
    for row in rows:
        end = aligns[corpus_mod.alignment_key(row.file_name)].words[-1][2]
        assert abs(sum(row.duration) * 0.04 - end) < 0.1                     # 25 Hz frames over the audio
    assert all(0 <= u < 20 for u in b.speak("The farmer heard some water."))
    with pytest.raises(InputError, match="expected dim 32"):
        HubertUnitizer(tmp_path / "hubert", np.zeros((20, 8), np.float32))
    with pytest.raises(InputError, match="layer"):
        HubertUnitizer(tmp_path / "hubert", tmp_path / "km.npy", layer=3)
    with pytest.raises(InputError, match="units: expected the unitizer's 20"):
        build_speech_corpus(sentences(4), tmp_path / "x", units=50, unitizer=unitizer)


def test_builder_refusals_leave_nothing(tmp_path):
    class Broken:
        def units(self, pcm, sample_rate):
            return np.full(10, 99)

    with pytest.raises(InputError, match=r"unit ids in \[0, 8\)"):
        build_speech_corpus(sentences(3), tmp_path / "bad", units=8, unitizer=Broken(), progress=lambda _: None)
    assert list(tmp_path.iterdir()) == []                                    # no half-written folder
    (tmp_path / "foreign").mkdir()
    (tmp_path / "foreign" / "notes.txt").write_text("mine")
    with pytest.raises(InputError, match="did not write"):
        build_speech_corpus(sentences(3), tmp_path / "foreign", units=8)
    with pytest.raises(InputError, match=r"texts\[1\]"):
        build_speech_corpus(["fine", "   "], tmp_path / "c", units=8)
    with pytest.raises(InputError, match="at least 500 frames"):
        build_speech_corpus(sentences(2), tmp_path / "d", units=500, progress=lambda _: None)
