"""Word-level interleaving: span selection, time slicing of units, markers."""
import math
from fractions import Fraction

import numpy as np
import pytest

from scaling.corpus import Alignment, UnitRow, split_repr, unit_times
from scaling.interleave import interleave, render, segments_for, select_speech_words, speech_word_target


def runs(mask):
    """(start, length) of each run of True."""
    out, i = [], 0
    while i < len(mask):
        if mask[i]:
            j = i
            while j < len(mask) and mask[j]:
                j += 1
            out.append((i, j - i))
            i = j
        else:
            i += 1
    return out


def exact_ceil(p, n):
    return math.ceil(Fraction(str(p)) * n)


# ------------------------------------------------------------------ selection

@pytest.mark.parametrize("prob", [0.1, 0.3, 0.5, 0.7, 1.0])
def test_poisson_selects_exactly_ceil_p_n(prob):
    for n in list(range(0, 60)) + [97, 250, 1000]:
        for seed in range(6):
            mask = select_speech_words(n, "poisson", 10, prob, np.random.default_rng(seed))
            assert len(mask) == n
            assert sum(mask) == exact_ceil(prob, n), (n, seed, prob)


def test_speech_word_target_is_the_exact_ceiling():
    # float products such as 0.29 * 100 = 28.999999999999996 or 0.57 * 100 = 56.99999999999999
    for n in range(0, 300):
        for p in (0.01, 0.1, 0.29, 0.3, 0.57, 0.7, 0.99, 1.0):
            assert speech_word_target(n, p) == exact_ceil(p, n), (n, p)


def test_poisson_spans_are_separate_runs_of_plausible_length():
    total_runs, total_words = 0, 0
    for seed in range(40):
        mask = select_speech_words(300, "poisson", 10, 0.3, np.random.default_rng(seed))
        rs = runs(mask)
        # runs never touch: at least one text word between speech runs
        for (s1, l1), (s2, _) in zip(rs, rs[1:]):
            assert s2 > s1 + l1
        total_runs += len(rs)
        total_words += sum(mask)
    mean_run = total_words / total_runs
    assert 5 < mean_run < 12  # Poisson(10) spans, some cut short by neighbours or the trimmed last span


def test_poisson_seeded():
    a = select_speech_words(200, "poisson", 10, 0.3, np.random.default_rng(7))
    b = select_speech_words(200, "poisson", 10, 0.3, np.random.default_rng(7))
    c = select_speech_words(200, "poisson", 10, 0.3, np.random.default_rng(8))
    assert a == b
    assert a != c


def test_poisson_small_lambda_and_dense_target_terminate():
    for seed in range(20):
        mask = select_speech_words(50, "poisson", 0.01, 0.9, np.random.default_rng(seed))
        assert sum(mask) == 45


def test_random_method():
    assert select_speech_words(100, "random", 10, 0.0, np.random.default_rng(0)) == [False] * 100
    assert select_speech_words(100, "random", 10, 1.0, np.random.default_rng(0)) == [True] * 100
    mask = select_speech_words(20000, "random", 10, 0.3, np.random.default_rng(0))
    assert 0.28 < sum(mask) / len(mask) < 0.32
    assert mask == select_speech_words(20000, "random", 10, 0.3, np.random.default_rng(0))


def test_span_method_runs_have_the_span_length():
    for seed in range(10):
        mask = select_speech_words(500, "span", 4.4, 0.2, np.random.default_rng(seed))
        rs = runs(mask)
        assert rs
        # a run is a whole number of 4-word spans (a new span may start right after one ends),
        # except one cut by the end of the utterance
        for start, length in rs:
            if start + length < 500:
                assert length % 4 == 0
    assert select_speech_words(30, "span", 3, 1.0, np.random.default_rng(0)) == [True] * 30
    assert select_speech_words(30, "span", 3, 0.0, np.random.default_rng(0)) == [False] * 30


def test_none_and_bad_method():
    assert select_speech_words(12, "none", 10, 0.3, np.random.default_rng(0)) == [False] * 12
    assert select_speech_words(0, "poisson", 10, 0.3, np.random.default_rng(0)) == []
    with pytest.raises(ValueError, match="unknown interleave method"):
        select_speech_words(3, "bogus", 10, 0.3, np.random.default_rng(0))


# ------------------------------------------------------------------ slicing and rendering

# 10 units; frames per unit and hence start times (s):
#   unit id: 10   11   12   13   14   15   16   17   18   19
#   frames:   5    5    5    5    5    5    5    5    5    5
#   start:  0.0  0.2  0.4  0.6  0.8  1.0  1.2  1.4  1.6  1.8
ROW = UnitRow("a/b/utt.flac", [10, 11, 12, 13, 14, 15, 16, 17, 18, 19], [5] * 10)
WORDS = [(" the", 0.0, 0.4), (" cat", 0.4, 0.8), (" sat", 0.8, 1.2), (" on", 1.2, 1.6), (" it", 1.6, 2.0)]
ALIGN = Alignment("utt.flac", WORDS, " the cat sat on it")


def _segments(mask, row=ROW, align=ALIGN):
    return segments_for(row, align, mask)


def test_unit_times_are_cumulative_starts():
    assert unit_times([1, 2, 3]) == [0.0, 0.04, 0.12]
    assert unit_times([25, 25], frame_s=0.04) == [0.0, 1.0]
    assert unit_times([]) == []


def test_units_sliced_by_start_time_exactly():
    segs = _segments([False, True, False, True, True])
    assert segs == [
        ("text", " the"),
        ("speech", [12, 13]),          # [0.4, 0.8): units starting at 0.4 and 0.6
        ("text", " sat"),
        ("speech", [16, 17, 18, 19]),  # [1.2, 2.0): 1.2, 1.4, 1.6, 1.8
    ]
    assert render(segs) == "<text> the<speech><Un12><Un13><text> sat<speech><Un16><Un17><Un18><Un19>"


def test_uneven_durations_and_boundary_units():
    # starts: 0.00, 0.12, 0.16, 0.44, 0.48, 0.80
    row = UnitRow("x", [1, 2, 3, 4, 5, 6], [3, 1, 7, 1, 8, 2])
    words = [(" a", 0.0, 0.12), (" b", 0.12, 0.48), (" c", 0.5, 0.9)]
    align = Alignment("x", words, " a b c")
    # unit 5 starts exactly at 0.48 = end of " b": belongs to the next group, not this one
    assert _segments([False, True, False], row, align) == [
        ("text", " a"), ("speech", [2, 3, 4]), ("text", " c")]
    # " c" spans [0.5, 0.9): only unit 6 (0.80) starts inside; unit 5 (0.48) starts before the word
    assert _segments([False, False, True], row, align) == [
        ("text", " a b"), ("speech", [6])]
    # one speech group of all words: every unit starting before 0.9
    assert _segments([True, True, True], row, align) == [("speech", [1, 2, 3, 4, 5, 6])]


def test_empty_speech_slice_falls_back_to_text_and_merges():
    # " cat" is said in [0.3, 0.35), where no unit starts
    row = UnitRow("x", [1, 2], [10, 10])  # starts 0.0, 0.4
    words = [(" the", 0.0, 0.3), (" cat", 0.3, 0.35), (" sat", 0.4, 0.8)]
    segs = _segments([False, True, False], row, Alignment("x", words, ""))
    assert segs == [("text", " the cat sat")]
    assert render(segs) == "<text> the cat sat"


def test_leading_spaces_kept_and_no_interleaving():
    segs = interleave(ROW, ALIGN, "none", 10, 0.3, np.random.default_rng(0))
    assert segs == [("text", " the cat sat on it")]
    assert interleave(ROW, Alignment("x", [], ""), "poisson", 10, 0.3, np.random.default_rng(0)) == []


def test_render_markers_at_start_and_every_switch():
    segs = [("speech", [3]), ("text", " hi"), ("speech", [1, 2]), ("text", " there")]
    s = render(segs)
    assert s == "<speech><Un3><text> hi<speech><Un1><Un2><text> there"
    assert render(segs, first_marker=False) == "<Un3><text> hi<speech><Un1><Un2><text> there"
    assert split_repr(s) == segs
    assert render([]) == ""
    with pytest.raises(ValueError):
        render([("image", "x")])


def test_interleave_round_trips_through_split_repr_and_is_seeded():
    rng_words = np.random.default_rng(123)
    n_words = 60
    starts = np.cumsum(rng_words.uniform(0.05, 0.6, n_words))
    words = [(f" w{i}", float(s), float(s) + 0.05) for i, s in enumerate(starts)]
    frames = int(math.ceil((starts[-1] + 0.1) / 0.04))
    duration = [1] * frames
    units = [int(u) for u in rng_words.integers(0, 500, frames)]
    row, align = UnitRow("u", units, duration), Alignment("u", words, "")
    for seed in range(20):
        segs = interleave(row, align, "poisson", 10, 0.3, np.random.default_rng(seed))
        again = interleave(row, align, "poisson", 10, 0.3, np.random.default_rng(seed))
        assert segs == again
        s = render(segs)
        assert s.startswith(("<text>", "<speech>"))
        assert split_repr(s) == segs
        # modalities alternate, and a marker precedes every segment
        assert all(a[0] != b[0] for a, b in zip(segs, segs[1:]))
        assert s.count("<speech>") + s.count("<text>") == len(segs)
        # the same as slicing by the mask the same seed draws
        mask = select_speech_words(n_words, "poisson", 10, 0.3, np.random.default_rng(seed))
        assert segs == segments_for(row, align, mask)
        assert any(m == "speech" for m, _ in segs) and any(m == "text" for m, _ in segs)
    outs = {render(interleave(row, align, "poisson", 10, 0.3, np.random.default_rng(s))) for s in range(5)}
    assert len(outs) > 1
