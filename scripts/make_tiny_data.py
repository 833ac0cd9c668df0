"""Regenerate examples/tiny-data/: the small synthetic speech-text corpus examples/tiny.yaml trains on
(unit rows + word-alignment side-cars in SlamKit's formats, a text corpus, a byte-level BPE tokenizer and
a sWUGGY-like pair manifest). Speech units are a fixed function of each word, so speech is learnable."""
import shutil
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT / "tests"))

from fixtures_data import make_corpus  # noqa: E402

if __name__ == "__main__":
    out = ROOT / "examples" / "tiny-data"
    shutil.rmtree(out, ignore_errors=True)
    paths = make_corpus(out, n_units=50, n_utts=150, n_text=150)
    print("\n".join(f"{k}: {v.relative_to(ROOT)}" for k, v in paths.items()))
