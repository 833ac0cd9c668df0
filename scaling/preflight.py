"""Preflight: the inputs one cell reads exist and their first rows parse with the fields the cell reads,
checked before any compute is spent or anything is written. Torch-free (`plan` runs it).

`cell_inputs(spec)` lists what a cell reads (`Input`s: corpora, alignment side-cars, pair manifests,
tokenizer, weights folder), equal for equal inputs so a study checks each once (`sweeps.preflight`);
`Input.check()` raises InputError with one line naming the key path, the file and what was wrong;
`check_cell(spec)` does both for one cell (`train`).
"""
from __future__ import annotations

import itertools
import json
from dataclasses import dataclass
from pathlib import Path
from typing import Iterator, Optional

from . import corpus as corpus_mod
from .data import streams_for
from .errors import InputError
from .pairs import read_pairs
from .spec import RunSpec

ROWS = 200  # rows (or side-car files) parsed per corpus: catches a wrong format, cheap on a 10 GB corpus
TOKENIZER_FILES = ("tokenizer.json", "tokenizer_config.json", "tokenizer.model", "vocab.json")
WEIGHT_SUFFIXES = (".safetensors", ".bin", ".pt", ".pth")
GGUF_MARKER = "gguf.json"  # scaling.members: a converted GGUF folder loads its weights from the GGUF file


@dataclass(frozen=True)
class Input:
    """One file or folder a cell reads and how it reads it (hashable: a study checks each once)."""
    kind: str                  # corpus | alignments | exists | manifest | tokenizer | weights
    where: str                 # key path in the study file, e.g. data.corpora[0].path
    path: str
    fmt: str = ""              # corpus format (units, tokens, text)
    units: int = 0             # unit ids must lie in [0, units)
    read: bool = True          # False: the cell only needs it to exist (the data cache key stats it)
    speech_only: bool = False  # a manifest scored by a textless cell (no text items)
    match: str = ""            # alignments: the unit corpus whose first rows' side-cars must be there

    def check(self) -> None:
        try:
            _CHECKS[self.kind](self)
        except InputError as e:
            raise InputError(f"{self.where}: {e}") from None


def is_local(source: str, base_dir: Optional[Path] = None) -> bool:
    """Whether a tokenizer / weights name is meant as a local folder rather than an HF id (`org/name`):
    absolute, relative to `.` or `~`, not of the id form, or under a folder that exists beside the study."""
    p = Path(source).expanduser()
    if p.is_absolute() or source.startswith((".", "~")) or p.exists() or source.count("/") != 1:
        return True
    return base_dir is not None and (base_dir / source.split("/")[0]).is_dir()


def _first(rows: Iterator, n: int = ROWS) -> list:
    return list(itertools.islice(rows, n))


def _check_corpus(item: Input) -> None:
    path = Path(item.path)
    if not path.is_file():
        raise InputError(f"{path}: no such file (a {item.fmt} corpus)")
    if not item.read:
        return
    if item.fmt == "units":
        rows = _first(corpus_mod.read_units(path, item.units))
    elif item.fmt == "tokens":
        rows = _first(corpus_mod.read_token_rows(path, item.units))
    else:
        rows = _first(corpus_mod.read_text(path))
    if not rows:
        raise InputError(f"{path}: empty; expected {item.fmt} rows (README, 'Corpus formats')")


def _check_alignments(item: Input) -> None:
    path = Path(item.path)
    if not path.exists():
        raise InputError(f"{path}: no such file or directory (word-alignment side-cars)")
    if path.is_dir() and not any(path.glob("*.json")):
        raise InputError(f"{path}: no <stem>.json alignment files in this directory")
    if not _first(corpus_mod.iter_alignments(path)):
        raise InputError(f"{path}: empty; expected alignment rows {{file_name, aligned_text}}")
    if path.is_dir() and item.match:
        stems = [corpus_mod.alignment_key(r.file_name) for r in _first(corpus_mod.read_units(item.match, item.units))]
        if stems and not any((path / f"{s}.json").is_file() for s in stems):
            raise InputError(f"{path}: no side-car for any of the first {len(stems)} rows of {item.match} "
                             f"(expected <stem>.json named by each row's file_name, e.g. {stems[0]}.json)")


def _check_exists(item: Input) -> None:
    if not Path(item.path).exists():
        raise InputError(f"{item.path}: no such file or directory")


def _check_manifest(item: Input) -> None:
    if not Path(item.path).is_file():
        raise InputError(f"{item.path}: no such file (a pair manifest)")
    pairs = read_pairs(item.path, item.units)
    if item.speech_only:
        for pair in pairs:
            for side in ("prompt", "positive", "negative"):
                if side in pair and pair[side][0] != "speech":
                    raise InputError(f"{item.path}: pair {pair['id']!r}: field '{side}': a textless cell scores "
                                     "speech items only; expected {\"units\": [...]}, got a text item")


def _check_tokenizer(item: Input) -> None:
    folder = Path(item.path).expanduser()
    if not item.read:  # an HF id: the hub (or its cache) is asked when the cell builds its vocabulary
        return
    if not folder.is_dir():
        raise InputError(f"{folder}: no such tokenizer folder")
    present = [n for n in TOKENIZER_FILES if (folder / n).is_file()]
    if not present:
        raise InputError(f"{folder}: no tokenizer files; expected one of {', '.join(TOKENIZER_FILES)}")
    for name in ("tokenizer.json", "tokenizer_config.json"):
        if name in present:
            try:
                json.loads((folder / name).read_text())
            except (OSError, ValueError) as e:
                raise InputError(f"{folder / name}: not a readable JSON file ({type(e).__name__})") from None


def _check_weights(item: Input) -> None:
    folder = Path(item.path).expanduser()
    if not item.read:  # an HF id: loaded from the hub (or its cache) when the cell starts
        return
    if not folder.is_dir():
        raise InputError(f"{folder}: no such weights folder (init: textlm loads the TextLM from it)")
    if not (folder / "config.json").is_file():
        raise InputError(f"{folder}: no config.json; expected a Hugging Face model folder")
    if not (folder / GGUF_MARKER).is_file() and not any(
            f.name.endswith(WEIGHT_SUFFIXES) for f in folder.iterdir() if f.is_file()):
        raise InputError(f"{folder}: no weight files; expected *.safetensors or *.bin (init: textlm)")


_CHECKS = {"corpus": _check_corpus, "alignments": _check_alignments, "exists": _check_exists,
           "manifest": _check_manifest, "tokenizer": _check_tokenizer, "weights": _check_weights}


def cell_inputs(spec: RunSpec, base_dir: Optional[Path] = None) -> list[Input]:
    """What the cell reads, as scaling.data, scaling.vocab, scaling.model and the evaluation read it:
    every corpus must exist (the data cache key stats them all); a corpus is parsed when the cell's
    streams read it; side-cars when it trains on the interleaved stream."""
    data = spec.data
    wanted = set(streams_for(spec.setup, data))
    out = []
    for i, c in enumerate(data.corpora):
        where = f"data.corpora[{i}]"
        used = not (c.synthetic and not data.use_synthetic)
        read = used and (c.format != "text" or "text" in wanted)
        out.append(Input("corpus", f"{where}.path", c.path, c.format, data.units, read))
        if c.alignments:
            interleaved = used and c.format == "units" and "interleaved" in wanted
            if interleaved:
                out.append(Input("alignments", f"{where}.alignments", c.alignments, units=data.units,
                                 match=c.path if Path(c.path).is_file() else ""))
            else:
                out.append(Input("exists", f"{where}.alignments", c.alignments))
    for i, b in enumerate(spec.eval.benchmarks):
        out.append(Input("manifest", f"eval.benchmarks[{i}].manifest", b.manifest, units=data.units,
                         speech_only=spec.setup == "textless"))
    if spec.setup != "textless" and (spec.tokenizer or spec.weights):
        out.append(_folder("tokenizer", f"families.{spec.family}.tokenizer", spec.tokenizer or spec.weights, base_dir))
    if spec.init == "textlm" and spec.weights:
        out.append(_folder("weights", f"families.{spec.family}.weights", spec.weights, base_dir))
    return out


def _folder(kind: str, where: str, source: str, base_dir: Optional[Path]) -> Input:
    """A tokenizer or weights folder: local ones are read (relative to the study file), HF ids looked up."""
    local = is_local(source, base_dir)
    path = Path(source).expanduser()
    if local and not path.is_absolute() and base_dir is not None and not path.exists():
        path = (base_dir / path).resolve()
    return Input(kind, where, str(path) if local else source, read=local)


def check_cell(spec: RunSpec) -> None:
    """Every input of one cell (InputError naming the cell's key path and file on the first bad one)."""
    for item in cell_inputs(spec):
        item.check()
