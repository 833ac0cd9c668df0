"""A stream that runs out is read again in a new permutation: deterministic, one full pass per epoch, and
resumed exactly from a checkpoint's read positions (issue 22)."""
import json
import signal
import time

import numpy as np

from fixtures_data import tiny_study
from test_train import _metrics, _train, corpus, run_dir_of, write_study  # noqa: F401 (corpus: fixture)

from scaling.data import PackedData


def _packed(seed=3):
    rng = np.random.default_rng(0)
    context = 8
    train = {"text": rng.integers(0, 100, 8 * 5 + 1).astype(np.uint32),        # 5 windows
             "speech": rng.integers(0, 100, 8 * 13 + 1).astype(np.uint32)}     # 13 windows
    return PackedData(context, {"text": 0.5, "speech": 0.5}, train, {}, seed)


def _read(data, n, seq_index=0, pos=None):
    pos = dict.fromkeys(data.shares, 0) if pos is None else pos
    out = []
    for j in range(seq_index, seq_index + n):
        stream, window = data.sequence(j, pos)
        out.append((stream, window.tobytes()))
    return out, pos


def test_each_epoch_is_a_fresh_deterministic_permutation():
    data = _packed()
    seqs, pos = _read(data, 200)
    assert seqs == _read(_packed(), 200)[0]                       # same seed, same order
    assert seqs != _read(_packed(seed=4), 200)[0]                 # the seed decides it
    assert data.epochs_seen(pos)["epochs"]["text"] > 10           # the text stream repeated many times
    text = [w for s, w in seqs if s == "text"]
    epochs = [text[i:i + 5] for i in range(0, len(text) - 4, 5)]
    windows = {data.train["text"][k * 8:k * 8 + 9].astype(np.int64).tobytes() for k in range(5)}
    assert all(set(e) == windows for e in epochs)                 # every pass reads every window once
    assert len({tuple(e) for e in epochs}) > 1                    # in a new order
    # resuming from (sequence index, read positions) mid-epoch continues the same sequence
    head, pos = _read(_packed(), 77)
    tail, _ = _read(_packed(), 123, seq_index=77, pos=dict(pos))
    assert head + tail == seqs


def test_repeated_stream_resumes_exactly(tmp_path, corpus):  # noqa: F811
    tokens = 30000   # two to three passes over the fixture corpus's streams
    ref_dir, run = tmp_path / "ref", tmp_path / "pre"
    ref_dir.mkdir(), run.mkdir()
    ref_study = write_study(ref_dir, tiny_study(ref_dir, corpus, "llama", tokens=tokens,
                                                checkpoint_every_tokens=10**6, log_every=1))
    assert _train(ref_study).wait(timeout=600) == 0
    ref = json.loads((run_dir_of(ref_dir) / "result.json").read_text())
    assert min(ref["epochs"].values()) > 1.5, ref["epochs"]       # every stream repeats

    study = write_study(run, tiny_study(run, corpus, "llama", tokens=tokens, checkpoint_every_tokens=10**6,
                                        log_every=1))
    proc = _train(study)
    target = int(0.7 * tokens / 256)   # past the first epoch of every stream
    deadline = time.time() + 600
    while time.time() < deadline and proc.poll() is None:
        steps = [json.loads(line)["step"] for line in _metrics(run)]
        if steps and max(steps) >= target:
            proc.send_signal(signal.SIGUSR2)
            break
        time.sleep(0.005)
    out, _ = proc.communicate(timeout=600)
    assert proc.returncode == 3 and "checkpointed, exiting for requeue" in out, out[-2000:]
    proc = _train(study)
    out, _ = proc.communicate(timeout=600)
    assert proc.returncode == 0 and out.count("resumed from") == 1, out[-2000:]
    res = json.loads((run_dir_of(run) / "result.json").read_text())
    assert res["epochs"] == ref["epochs"] and res["unique_tokens"] == ref["unique_tokens"]
    assert res["loss"] == ref["loss"] and res["val_loss"] == ref["val_loss"]
    losses = [json.loads(line)["loss"] for line in _metrics(run) if "loss" in json.loads(line)]
    assert losses == [json.loads(line)["loss"] for line in _metrics(ref_dir) if "loss" in json.loads(line)]
    print(f"epochs seen: {res['epochs']}; unique tokens: {res['unique_tokens']}")
