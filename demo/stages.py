"""`launch.py demo`: the whole tool at micro scale on a CPU, from nothing to a scaling report that answers
the SIMS question (do TextLM-initialised interleaved SLMs scale better with compute than textless SLMs?).

Seven stages, each timed and each reused when its inputs have not changed:

1. text: TinyStories-like stories from the grammar in `demo.speechdata.stories`, for the TextLM
   pretraining, the SLM's text stream and the spoken corpus (disjoint stories);
2. speech: the spoken stories synthesised with eSpeak, cut into 25 Hz k-means units, written as SlamKit
   unit rows + word-alignment side-cars (`demo.speechdata.build`);
3. evalsets: sWUGGY / sBLIMP / sSC / tSC-style pair manifests spoken by the same voice and units;
4. textlm: a byte-level BPE tokenizer and the micro TextLM family, pretrained on text only by the study
   training cell (`setup: text`, `init: random`) through the local executor and exported as ordinary
   Hugging Face model folders;
5. study: the study file's cells (interleaved SLMs initialised from that family and their textless twins on
   an IsoFLOP grid) through the local executor, mirrored to the study's MLflow store;
6. wsd: the interleaved cells again with `schedule: wsd`, one constant-LR trunk per member and each budget
   a decay branch off it (`demo.wsd`), into `<root>/<study>-wsd/`;
7. report: the scaling report (`analysis.commands.report_study`) with the interleaved-against-textless
   comparison and the WSD-against-cosine section, logged to MLflow.

Generated data goes to `<study file's folder>/<study file's stem>-data/` (the study file names it with
relative paths). Every stage writes into a temporary folder renamed into place, then a marker
`<data>/.demo/<stage>.json` holding its fingerprint (its settings, the code that makes it and the
fingerprints of the stages it reads); a stage whose marker matches is reused. Cells are reused by
`submit` itself (DONE cells are skipped, interrupted ones resume).
"""
from __future__ import annotations

import hashlib
import json
import logging
import os
import random
import shutil
import sys
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Callable, Optional

from analysis.mlflow_io import log_report
from common.rundir import RunDir, read_json
from scaling.errors import InputError
from scaling.fmt import duration, short_count
from scaling.tracking import default_uri

from sweeps.grid import expand
from sweeps.rundirs import ensure_run_dir
from sweeps.study import Study, load_study, parse_study
from sweeps.ui import command_line

from analysis.wsd_comparison import summary as wsd_summary
from demo.wsd import COMPARISON, comparison as wsd_comparison, wsd_study
from demo.micro_family import SIZES, export_member, member_config, train_tokenizer
from demo.speechdata.evalsets import write_manifests
from demo.speechdata.episodes import generate_episodes
from demo.speechdata.stories import generate_stories

ROOT = Path(__file__).resolve().parents[1]
DEFAULT_STUDY = ROOT / "examples" / "micro.yaml"
FORMAT_VERSION = 1
STAGES = ("text", "speech", "evalsets", "textlm", "study", "wsd", "report")
TEXTLM_BENCHMARKS = ("tsc_tt", "ssc_tt")   # the TextLM's own text-only story cloze (SIMS Table 2, "Orig.")
TEXTLM_EVAL = "textlm_eval.json"           # written beside each exported member's weights


class DemoError(InputError):
    """The demo cannot go on (one line naming the stage and why)."""


@dataclass
class DemoSpec:
    """What the demo generates around the study file (the study file itself holds the grid, training and
    evaluation settings). Defaults: the micro demo, about 6 minutes on two CPU cores."""
    seed: int = 0
    text_stories: int = 5000          # TextLM pretraining and the SLM text stream
    text_episodes: int = 40000        # short episodes (demo.speechdata.episodes) in the same text
    speech_stories: int = 300         # spoken with eSpeak (disjoint from the text stories)
    speech_episodes: int = 2000       # spoken short episodes (disjoint from the text episodes)
    val_fraction: float = 0.05        # spoken stories held out for validation
    eval_pairs: int = 500             # pairs per benchmark
    vocab_size: int = 512             # BPE tokenizer of the TextLM family
    sizes: Optional[dict[str, dict[str, int]]] = None   # member name -> shape; default micro_family.SIZES
    pretrain_tokens: int = 4_000_000  # text tokens per TextLM member: d16 and d32 reach text-only tSC > 0.9
    pretrain_training: dict[str, Any] = field(default_factory=lambda: {
        "context": 128, "micro_batch": 8, "batch_tokens": 1024, "lr": 3.0e-3, "min_lr": 3.0e-4,
        "warmup": 0.05, "precision": "fp32", "log_every": 20})
    pretrain_threads: int = 1         # torch threads of the in-process TextLM pretraining (0: every core; the
                                      # micro models' matrices are tiny: one thread is as fast, and a shared
                                      # machine's other jobs do not stall it)
    poll_s: float = 2.0
    progress_every_s: float = 20.0
    timeout_s: float = 3600.0         # per cell-running stage
    n_bootstrap: int = 100


@dataclass
class StageTime:
    name: str
    seconds: float
    reused: bool
    detail: str = ""


@dataclass
class DemoResult:
    study_dir: Path
    data_dir: Path
    report_md: Path
    report_html: Path
    fits_json: Path
    tracking_uri: Optional[str]
    mlflow_command: Optional[str]
    stages: list[StageTime]
    seconds: float
    summary: list[str]


# ----------------------------------------------------------------------------------------- plumbing


def _digest(obj: Any) -> str:
    return hashlib.sha256(json.dumps(obj, sort_keys=True, default=str).encode()).hexdigest()[:16]


def _source_digest(*modules: str) -> str:
    """Hash of the source files of `modules` (dotted names; a package means all its .py files)."""
    h = hashlib.sha256()
    for mod in modules:
        path = ROOT.joinpath(*mod.split("."))
        files = sorted(path.rglob("*.py")) if path.is_dir() else [path.with_suffix(".py")]
        for f in files:
            if f.exists():
                h.update(str(f.relative_to(ROOT)).encode())
                h.update(f.read_bytes())
    return h.hexdigest()[:16]


def _write_atomic(path: Path, text: str) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(f".{path.name}.tmp{os.getpid()}")
    tmp.write_text(text)
    os.replace(tmp, path)


def _replace_dir(tmp: Path, dest: Path) -> None:
    """Move a finished temporary folder into place (the old one, if any, is removed first)."""
    if dest.exists():
        old = dest.with_name(dest.name + f".old{os.getpid()}")
        os.replace(dest, old)
        os.replace(tmp, dest)
        shutil.rmtree(old, ignore_errors=True)
    else:
        os.replace(tmp, dest)


def _tmp_dir(dest: Path) -> Path:
    """An empty folder beside `dest` to build it in; leftovers of a killed earlier build are removed."""
    for stale in dest.parent.glob(f"{dest.name}.tmp*"):
        shutil.rmtree(stale, ignore_errors=True)
    for stale in dest.parent.glob(f"{dest.name}.old*"):
        shutil.rmtree(stale, ignore_errors=True)
    tmp = dest.with_name(dest.name + f".tmp{os.getpid()}")
    tmp.mkdir(parents=True)
    return tmp


class _Stages:
    """Markers of finished stages, and the timing of each stage of this run."""

    def __init__(self, data_dir: Path, log: Callable[[str], None]):
        self.dir = data_dir / ".demo"
        self.log = log
        self.times: list[StageTime] = []

    def marker(self, name: str) -> dict:
        return read_json(self.dir / f"{name}.json", {}) or {}

    def fresh(self, name: str, fingerprint: str, outputs: list[Path]) -> Optional[dict]:
        m = self.marker(name)
        if m.get("fingerprint") == fingerprint and all(Path(p).exists() for p in outputs):
            return m
        return None

    def finish(self, name: str, fingerprint: str, info: dict) -> dict:
        m = {"fingerprint": fingerprint, "finished": time.strftime("%Y-%m-%dT%H:%M:%S"), **info}
        _write_atomic(self.dir / f"{name}.json", json.dumps(m, indent=1, default=str) + "\n")
        return m

    def run(self, index: int, name: str, title: str, fingerprint: str, outputs: list[Path],
            build: Callable[[], dict], describe: Callable[[dict], str]) -> dict:
        """Reuse stage `name` when its marker matches `fingerprint` and `outputs` exist; else build it."""
        t0 = time.time()
        head = f"[{index}/{len(STAGES)}] {title}"
        m = self.fresh(name, fingerprint, outputs)
        if m is not None:
            dt = time.time() - t0
            self.log(f"{head}: reused ({describe(m)}) {dt:.1f}s")
            self.times.append(StageTime(name, dt, True, describe(m)))
            return m
        self.log(f"{head} ...")
        info = build()
        m = self.finish(name, fingerprint, {**info, "seconds": time.time() - t0})
        dt = time.time() - t0
        self.log(f"{head}: done ({describe(m)}) in {duration(dt)} ({dt:.1f}s)")
        self.times.append(StageTime(name, dt, False, describe(m)))
        return m


def data_dir_of(study_path: Path) -> Path:
    """Where the demo writes the generated data of a study file: `<folder>/<stem>-data/`."""
    return study_path.parent / f"{study_path.stem}-data"


def _jsonl(path: Path, rows: list[dict]) -> None:
    path.write_text("".join(json.dumps(r) + "\n" for r in rows))


def _rel(path: Path) -> str:
    try:
        return os.path.relpath(path)
    except ValueError:
        return str(path)


# ----------------------------------------------------------------------------------------- the study file


@dataclass
class _Layout:
    """The demo's view of a study file: which members it must build, from which sizes."""
    study: Study
    study_path: Path
    data_dir: Path
    members: dict[str, dict[str, int]]     # member name -> shape
    tokenizer: Path


def _layout(study_path: Path, spec: DemoSpec) -> _Layout:

    study_path = study_path.resolve()   # local members and their weights resolve to absolute paths
    study = load_study(study_path)
    data_dir = data_dir_of(study_path)
    sizes = spec.sizes if spec.sizes is not None else SIZES
    textlm_dir = (data_dir / "textlm").resolve()
    members: dict[str, dict[str, int]] = {}
    tokenizer = None
    for fam_name, fam in study.families.items():
        if not isinstance(fam.members, list):
            continue
        for i, m in enumerate(fam.members):
            path = (study_path.parent / m).resolve()
            if path.parent != textlm_dir:
                continue
            if path.name not in sizes:
                raise DemoError(f"{study_path}: families.{fam_name}.members[{i}]: {m!r} is a demo member, but "
                                f"the demo has no size {path.name!r}; expected one of {', '.join(sizes)}")
            members[path.name] = sizes[path.name]
            if fam.tokenizer:
                tokenizer = (study_path.parent / fam.tokenizer).resolve()
    if not members:
        raise DemoError(f"{study_path}: no family member lies in {_rel(data_dir / 'textlm')}/; the demo builds "
                        "its TextLM family there (e.g. members: [micro-data/textlm/d32, ...])")
    return _Layout(study, study_path, data_dir, members, tokenizer or (data_dir / "tokenizer").resolve())


# ----------------------------------------------------------------------------------------- stages 1-3: data


def _stage_text(st: _Stages, lay: _Layout, spec: DemoSpec) -> dict:
    out = lay.data_dir / "text"
    fp = _digest({"v": FORMAT_VERSION, "code": _source_digest("demo.speechdata.stories", "demo.speechdata.episodes"),
                  "seed": spec.seed, "text": spec.text_stories, "speech": spec.speech_stories,
                  "text_episodes": spec.text_episodes, "speech_episodes": spec.speech_episodes})

    def build() -> dict:

        stories = generate_stories(spec.text_stories + spec.speech_stories, spec.seed)
        episodes = generate_episodes(spec.text_episodes + spec.speech_episodes, spec.seed)
        rng = random.Random(spec.seed)
        text = stories[:spec.text_stories] + episodes[:spec.text_episodes]
        spoken = stories[spec.text_stories:] + episodes[spec.text_episodes:]
        rng.shuffle(text)
        rng.shuffle(spoken)
        tmp = _tmp_dir(out)
        _jsonl(tmp / "stories.jsonl", [{"text": s} for s in text])
        _jsonl(tmp / "spoken.jsonl", [{"text": s} for s in spoken])
        _replace_dir(tmp, out)
        words = sum(len(s.split()) for s in text + spoken)
        return {"stories": len(stories), "episodes": len(episodes), "words": words}

    return st.run(1, "text", "text corpus: generated TinyStories-like stories and short episodes", fp,
                  [out / "stories.jsonl", out / "spoken.jsonl"], build,
                  lambda m: f"{m['stories']:,} stories + {m.get('episodes', 0):,} episodes, "
                            f"{short_count(m['words'])} words")


def _read_texts(path: Path) -> list[str]:
    return [json.loads(line)["text"] for line in path.read_text().splitlines() if line.strip()]


def _stage_speech(st: _Stages, lay: _Layout, spec: DemoSpec, text_fp: str, log) -> dict:
    out = lay.data_dir / "speech"
    units = lay.study.data.units
    code = _source_digest(*(f"demo.speechdata.{m}" for m in ("tts", "features", "units", "build")))
    fp = _digest({"v": FORMAT_VERSION, "code": code, "text": text_fp,
                  "units": units, "seed": spec.seed, "val": spec.val_fraction})

    def build() -> dict:
        corpus = _build_speech(lay, spec, log=lambda line: log(f"    {line}"))
        return {"hours": corpus.hours, "units_per_second": corpus.units_per_second, "n_train": corpus.n_train,
                "n_val": corpus.n_val, "units": str(corpus.units_path), "alignments": str(corpus.alignments)}

    return st.run(2, "speech", f"speech corpus: eSpeak + {units} k-means units at 25 Hz", fp, [out], build,
                  lambda m: f"{m.get('hours', 0):.2f} h of speech, {m.get('units_per_second', 0):.1f} units/s")


def _build_speech(lay: _Layout, spec: DemoSpec, log: Callable[[str], None]):
    """The speech corpus (built, or reused by the builder itself when its inputs are unchanged)."""
    from demo.speechdata.build import build_speech_corpus  # heavy: scipy/sklearn speech pipeline

    texts = _read_texts(lay.data_dir / "text" / "spoken.jsonl")
    return build_speech_corpus(texts, lay.data_dir / "speech", lay.study.data.units, seed=spec.seed,
                               val_fraction=spec.val_fraction, progress=log)


def _stage_evalsets(st: _Stages, lay: _Layout, spec: DemoSpec, speech_fp: str, log) -> dict:
    out = lay.data_dir / "eval"
    context = lay.study.training.context
    code = _source_digest("demo.speechdata.evalsets", "demo.speechdata.stories", "demo.speechdata.episodes")
    fp = _digest({"v": FORMAT_VERSION, "code": code, "speech": speech_fp,
                  "n": spec.eval_pairs, "seed": spec.seed, "context": context})

    def build() -> dict:
        from demo.speechdata.evalsets import check_manifests, sentences_of

        tmp = _tmp_dir(out)
        speak = _build_speech(lay, spec, log=lambda line: None).speak
        training = _read_texts(lay.data_dir / "text" / "stories.jsonl") + \
            _read_texts(lay.data_dir / "text" / "spoken.jsonl")
        paths = write_manifests(tmp, speak, n=spec.eval_pairs, seed=spec.seed, exclude=sentences_of(training))
        try:
            checked = check_manifests(paths, context, training)
        except ValueError as e:
            raise DemoError(f"evaluation sets: {e}") from None
        _replace_dir(tmp, out)
        longest = max(v["longest"] for v in checked["sets"].values())
        log(f"    every item fits the context: the longest pair is at most {longest} tokens of {context} "
            f"(limit {checked['limit']}); no prompt or sBLIMP sentence occurs in the training text or speech")
        return {"manifests": {k: str(out / Path(p).name) for k, p in paths.items()},
                "pairs": {k: v["pairs"] for k, v in checked["sets"].items()},
                "longest": longest, "context": context}

    return st.run(3, "evalsets", "evaluation sets: sWUGGY / sBLIMP and tSC / sSC in four forms", fp, [out], build,
                  lambda m: f"{len(m['manifests'])} manifests x {min(m.get('pairs', {'': spec.eval_pairs}).values())}"
                            f"+ pairs, longest {m.get('longest', '?')} of {m.get('context', '?')} tokens")


# ----------------------------------------------------------------------------------------- stage 4: TextLM family


def _pretrain_study(lay: _Layout, spec: DemoSpec, tok_len: int, eos: int) -> Study:
    ctx = spec.pretrain_training["context"]
    names = list(lay.members)
    base = member_config(lay.members[names[0]], tok_len, ctx, eos)
    data = {
        "name": f"{lay.study.name}-textlm",
        "root": str((lay.data_dir / "textlm-runs").resolve()),
        "families": {"textlm": {"base": base, "members": {n: dict(lay.members[n]) for n in names},
                                "init": "random", "setup": "text", "tokenizer": str(lay.tokenizer)}},
        "grid": {"tokens": [spec.pretrain_tokens]},
        "data": {"units": lay.study.data.units,
                 "corpora": [{"path": str((lay.data_dir / "text" / "stories.jsonl").resolve()), "format": "text"}]},
        "training": dict(spec.pretrain_training),
        "eval": {"val_tokens": 20_000, "benchmarks": [
            {"name": n, "manifest": str((lay.data_dir / "eval" / f"{n}.jsonl").resolve())} for n in TEXTLM_BENCHMARKS]},
        # the run directories keep everything; the study's MLflow store holds the study itself
        "tracking": {"enabled": False},
        "executor": {"kind": "local", "gpu_type": "cpu", "peak_tflops": 0.1, "assumed_mfu": 0.2,
                     "max_retries": 1, "slurm": {"cpus_per_task": 1, "time_min": 60}},
    }
    return parse_study(data, f"{lay.study_path} (demo TextLM pretraining)")


def _check_text_items(lay: _Layout, tok, context: int) -> None:
    """The TextLM's text-only pairs fit its pretraining context (exact token counts)."""
    for n in TEXTLM_BENCHMARKS:
        for line in (lay.data_dir / "eval" / f"{n}.jsonl").read_text().splitlines():
            r = json.loads(line)
            p = len(tok(r["prompt"]["text"], add_special_tokens=False)["input_ids"])
            e = max(len(tok(r[k]["text"], add_special_tokens=False)["input_ids"]) for k in ("positive", "negative"))
            if p + e + 1 > context:
                raise DemoError(f"{n}: pair {r['id']!r} is {p + e + 1} tokens, longer than the TextLM's "
                                f"pretraining context {context}")


def _stage_textlm(st: _Stages, lay: _Layout, spec: DemoSpec, text_fp: str, evals_fp: str, log) -> dict:
    out = lay.data_dir / "textlm"
    fp = _digest({"v": FORMAT_VERSION, "code": _source_digest("demo.micro_family"), "text": text_fp, "evals": evals_fp,
                  "vocab": spec.vocab_size, "members": lay.members, "tokens": spec.pretrain_tokens,
                  "training": spec.pretrain_training, "tokenizer": str(lay.tokenizer)})
    outputs = [lay.tokenizer] + [out / n / "config.json" for n in lay.members]

    def build() -> dict:
        from transformers import AutoTokenizer  # heavy: transformers only when a model/tokenizer is built

        t0 = time.time()
        texts = _read_texts(lay.data_dir / "text" / "stories.jsonl")
        train_tokenizer(texts, lay.tokenizer, spec.vocab_size)
        tok = AutoTokenizer.from_pretrained(str(lay.tokenizer))
        log(f"    tokenizer: byte-level BPE, {len(tok)} tokens, {_rel(lay.tokenizer)} ({time.time() - t0:.1f}s)")
        _check_text_items(lay, tok, spec.pretrain_training["context"])
        runs = lay.data_dir / "textlm-runs"
        shutil.rmtree(runs, ignore_errors=True)       # cells of an older family or text are stale
        pre = _pretrain_study(lay, spec, len(tok), tok.eos_token_id)
        results = _train_in_process(pre, spec, log)

        tmp = _tmp_dir(out)
        info = {"tokenizer": str(lay.tokenizer), "tokenizer_len": len(tok), "members": {}}
        for cell in expand(pre):
            res = results[cell.key]
            export_member(pre.study_dir / cell.key / "model", lay.tokenizer, tmp / cell.member)
            own = {"eval": res.get("eval", {}), "eval_n": res.get("eval_n", {}), "tokens": res["tokens"],
                   "flops": res.get("flops"), "params_total": cell.params.total,
                   "params_nonembedding": cell.params.nonembedding, "wall_seconds": res.get("wall_seconds"),
                   "val_loss_text": res["val_loss"].get("text"),
                   "note": "the TextLM's own scores on the text-only pairs, before any speech training"}
            _write_atomic(tmp / cell.member / TEXTLM_EVAL, json.dumps(own, indent=1) + "\n")
            info["members"][cell.member] = {"params_nonembedding": cell.params.nonembedding,
                                            "params_total": cell.params.total, "tokens": res["tokens"],
                                            "flops": res.get("flops"), "wall_seconds": res.get("wall_seconds"),
                                            "val_loss_text": res["val_loss"].get("text"), "eval": res.get("eval", {})}
        _replace_dir(tmp, out)
        log(f"    exported {len(info['members'])} Hugging Face model folders to {_rel(out)}/")
        return info

    def describe(m: dict) -> str:
        return ", ".join(f"{n} ({short_count(v['params_nonembedding'])}"
                         + "".join(f", {b} {v.get('eval', {}).get(b, float('nan')):.2f}" for b in TEXTLM_BENCHMARKS)
                         + ")" for n, v in m["members"].items()) + f"; {m['tokenizer_len']}-token BPE"

    return st.run(4, "textlm", f"micro TextLM family: tokenizer + {len(lay.members)} sizes pretrained on text",
                  fp, outputs, build, describe)


# ----------------------------------------------------------------------------------------- running cells


def _train_in_process(study: Study, spec: DemoSpec, log: Callable[[str], None]) -> dict[str, dict]:
    """Train the study's cells one after the other in this process with the training cell (`train_cell`),
    on every core: the TextLM pretraining (a few cells, where a process per cell would spend more time
    importing than training)."""
    import torch  # heavy: torch only for the training stage

    from scaling.train import train_cell  # heavy: imports torch


    from transformers.utils import logging as hf_logging  # heavy: transformers only when a model/tokenizer is built

    hf_logging.disable_progress_bar()   # "Writing model shards" bars would bury the progress lines
    cells = expand(study)
    threads = torch.get_num_threads()
    torch.set_num_threads(spec.pretrain_threads or os.cpu_count() or 1)
    out = {}
    try:
        for i, cell in enumerate(cells, 1):
            rd = ensure_run_dir(study, cell)
            t0, last = time.time(), [time.time()]

            def quiet(line: str, member=cell.member) -> None:
                if line.startswith("step ") and time.time() - last[0] >= spec.progress_every_s / 2:
                    last[0] = time.time()
                    log(f"      {member}: {line}")

            status = train_cell(rd, log=quiet)
            if status != "DONE":
                raise DemoError(f"TextLM pretraining: {cell.key} was interrupted; run the demo again to resume")
            res = RunDir(rd).result() or {}
            out[cell.key] = res
            log(f"    [{i}/{len(cells)}] {cell.member}: {cell.params.nonembedding:,} non-embedding parameters, "
                f"{short_count(res['tokens'])} text tokens, val loss {res['val_loss'].get('text', float('nan')):.3f} "
                f"({time.time() - t0:.0f}s, {short_count(res['tokens_per_second'])} tok/s)")
    finally:
        torch.set_num_threads(threads)
    return out


def run_cells(study: Study, log: Callable[[str], None], spec: DemoSpec, what: str = "cells") -> dict[str, dict]:
    """Submit the study's cells through its executor (local: a process per cell; debug: in this process)
    and wait for them (the shared submit path and wait loop, sweeps.lifecycle), printing progress;
    returns {key: result.json} of every cell. DONE cells are reused, interrupted ones resume, failures are
    retried up to executor.max_retries; a cell that still fails is a DemoError naming it and its error."""
    from sweeps.dispatch import submit  # heavy: submitit only when cells are submitted
    from sweeps.lifecycle import wait_cells  # heavy: submitit only when cells are submitted

    cells = expand(study)
    keys = [c.key for c in cells]
    budget = {c.key: c.tokens for c in cells}
    study_dir = Path(study.root).resolve() / study.name
    total_tokens = sum(budget.values())
    kind = study.executor.kind
    if kind not in ("local", "debug"):
        raise DemoError(f"{study.source}: executor.kind: the demo runs on this machine; expected local or debug, "
                        f"got {kind}")
    t0 = time.time()
    rep = submit(study, kind=kind, log=log)
    reused = sum(1 for d in rep.decisions if d.reason == "done")
    if rep.submitted:
        log(f"    {what}: {len(keys)} cells, {reused} already done, {len(rep.submitted)} started "
            f"({short_count(total_tokens)} tokens in all; logs in {_rel(study_dir / 'jobs')})")
    n_done = [0]
    last_progress = [time.time()]

    def on_end(w, how: str) -> None:
        if how != "DONE":
            log(f"    {w.key}: {how} ({w.state.get('error', 'not finished')})")
            return
        n_done[0] += 1
        if w.key in rep.submitted:
            res = RunDir(w.path).result() or {}
            loss = " ".join(f"{m} {v:.3f}" for m, v in res.get("val_loss", {}).items() if v is not None)
            log(f"    [{n_done[0]}/{len(keys)}] {w.key}: {loss} ({res.get('wall_seconds', 0):.0f}s, "
                f"{short_count(res.get('tokens_per_second', 0))} tok/s) at {duration(time.time() - t0)}")

    def on_poll(open_: dict) -> None:
        if time.time() - last_progress[0] < spec.progress_every_s:
            return
        last_progress[0] = time.time()
        done_tokens = sum(budget[k] if k not in open_ else RunDir(study_dir / k).last_metrics("tokens").get("tokens", 0)
                          for k in keys)
        log(f"    ... {n_done[0]}/{len(keys)} cells done, {100 * done_tokens / total_tokens:.0f}% of the "
            f"tokens, {duration(time.time() - t0)}")

    def resubmit(again: list[str]) -> None:
        r = submit(study, kind=kind, log=log)
        log(f"    resubmitted {len(r.submitted)} cell(s): "
            + ", ".join(f"{d.key} ({d.reason})" for d in r.decisions if d.action == "submit"))

    ended = wait_cells({k: study_dir / k for k in keys}, kind, study.executor.max_retries, resubmit,
                       on_end=on_end, on_poll=on_poll, poll_s=spec.poll_s, timeout_s=spec.timeout_s)
    failed = [k for k in keys if ended.get(k) != "DONE"]
    if failed:
        if len(ended) < len(keys):
            raise DemoError(f"{what}: not finished after {duration(spec.timeout_s)}; see "
                            f"`launch.py status {study.source}` and the logs in {study_dir / 'jobs'}")
        errs = "; ".join(f"{k}: {RunDir(study_dir / k).state().get('error', 'not finished')}" for k in failed[:3])
        raise DemoError(f"{what}: {len(failed)} of {len(keys)} cells did not finish ({errs}); logs in "
                        f"{study_dir / 'jobs'}")
    return {k: RunDir(study_dir / k).result() or {} for k in keys}


# ----------------------------------------------------------------------------------------- stages 5-7


def _stage_cells(st: _Stages, index: int, name: str, study: Study, head: str, spec: DemoSpec, data_fp: str,
                 log) -> dict[str, dict]:
    """Train a study's cells: always asks `submit` (which skips DONE cells); moves aside cells trained on
    older demo data. Returns {key: result.json}."""
    t0 = time.time()
    head = f"[{index}/{len(STAGES)}] {head}"
    study_dir = study.study_dir
    marker = st.marker(name)
    if study_dir.exists() and marker.get("data") not in (None, data_fp):
        aside = study_dir.with_name(f"{study_dir.name}.stale-{marker.get('data', 'old')[:8]}")
        shutil.rmtree(aside, ignore_errors=True)
        os.replace(study_dir, aside)
        log(f"{head}: the demo data changed since its cells were trained; moved them to {_rel(aside)}")

    keys = [c.key for c in expand(study)]
    for k in keys:  # a new demo run is a new chance for cells that used up their retries
        rd = RunDir(study_dir / k)
        state = rd.state()
        if state.get("state") == "FAILED" and state.get("failures", 0) > study.executor.max_retries:
            rd.update(allowed_from={"FAILED"}, failures=study.executor.max_retries)
    n_done = sum(1 for k in keys if RunDir(study_dir / k).state().get("state") == "DONE")
    reused = n_done == len(keys)
    if not reused:
        log(f"{head} ...")
    st.finish(name, "-", {"data": data_fp, "cells": len(keys)})
    results = run_cells(study, log, spec, what=f"{name} cells")
    dt = time.time() - t0
    detail = f"{len(keys)} cells" + (" all finished before" if reused else f", {len(keys) - n_done} trained now")
    log(f"{head}: {'reused' if reused else 'done'} ({detail}) {'' if reused else 'in ' + duration(dt) + ' '}"
        f"({dt:.1f}s)")
    st.times.append(StageTime(name, dt, reused, detail))
    return results


def _stage_study(st: _Stages, lay: _Layout, spec: DemoSpec, data_fp: str, log) -> dict:
    head = f"study: {lay.study.name} ({_rel(lay.study_path)}) through the {lay.study.executor.kind} executor"
    return {"cells": len(_stage_cells(st, 5, "study", lay.study, head, spec, data_fp, log))}


def _stage_wsd(st: _Stages, lay: _Layout, spec: DemoSpec, data_fp: str, log) -> Optional[Path]:
    """The interleaved cells again with schedule wsd (shared trunks, decay branches) and their comparison
    with the cosine cells, written for the report stage (demo.wsd)."""
    w = wsd_study(lay.study)
    head = (f"wsd: the interleaved cells again with schedule wsd ({w.training.decay_shape} decay over the last "
            f"{w.training.decay_fraction:g} of each budget), trunks shared per member, into {_rel(w.study_dir)}")
    results = _stage_cells(st, 6, "wsd", w, head, spec, data_fp, log)
    path = w.study_dir / COMPARISON
    _write_atomic(path, json.dumps(wsd_comparison(lay.study, w, results), indent=1) + "\n")
    return path


def _report_fingerprint(study_dir: Path) -> str:
    done = []
    for p in sorted(study_dir.iterdir()) if study_dir.is_dir() else []:
        stamp = RunDir(p).result_stamp()
        if stamp is not None:
            done.append([p.name, *stamp])
    return _digest({"v": FORMAT_VERSION, "runs": done, "code": _source_digest("analysis")})


def _stage_report(st: _Stages, lay: _Layout, spec: DemoSpec, uri: Optional[str], log,
                  wsd_path: Optional[Path] = None) -> dict:
    study = lay.study
    study_dir = study.study_dir
    out = study_dir / "report"
    wsd = json.loads(wsd_path.read_text()) if wsd_path is not None and wsd_path.is_file() else None
    fp = _digest([_report_fingerprint(study_dir), wsd])
    experiment = study.tracking.experiment or study.name

    def build() -> dict:
        from analysis.commands import report_study  # heavy: scipy fits only for the report stage

        tmp = _tmp_dir(out)
        res = report_study(study_dir, out_dir=tmp, tracking_uri=None, experiment=experiment,
                           n_bootstrap=spec.n_bootstrap, wsd=wsd)
        _replace_dir(tmp, out)
        run_id = None
        if uri:

            fits = json.loads((out / "fits.json").read_text())
            run_id = log_report(uri, experiment, out, fits)
        return {"n_runs": res["n_runs"], "mlflow_run_id": run_id}

    return st.run(7, "report", "report: fits, interleaved vs textless, downstream metrics, WSD vs cosine", fp,
                  [out / "report.md", out / "fits.json"], build,
                  lambda m: f"{m['n_runs']} runs fitted -> {_rel(out / 'report.md')}")


def _summary(fits_path: Path) -> list[str]:
    try:
        fits = json.loads(fits_path.read_text())
    except (OSError, ValueError):
        return []
    comp = fits.get("setup_comparison") or {}
    wsd = fits.get("wsd_comparison")
    return list(comp.get("summary", [])) + (wsd_summary(wsd) if wsd else [])


def _shell_path(path: str | Path) -> str:
    try:
        rel = os.path.relpath(path)
    except ValueError:
        return str(path)
    return rel if not rel.startswith("..") else str(path)


def ui_commands(study_path: Path, study: Study) -> tuple[str, str]:
    """(the `launch.py ui` line that opens the MLflow UI on the study, the bare `mlflow ui` line it runs)."""

    py = _shell_path(sys.executable)
    launch = f"{py} {_shell_path(ROOT / 'launch.py')} ui {_shell_path(study_path)}"
    return launch, command_line(study)


def run_demo(study_path: str | Path = DEFAULT_STUDY, log: Callable[[str], None] = print,
             spec: Optional[DemoSpec] = None) -> DemoResult:
    """Run (or reuse) every stage of the demo for `study_path`; see the module docstring."""
    spec = spec or DemoSpec()
    t0 = time.time()
    study_path = Path(study_path)
    lay = _layout(study_path, spec)
    os.environ.setdefault("MLFLOW_SUPPRESS_PRINTING_URL_TO_STDOUT", "true")
    os.environ.setdefault("MLFLOW_LOGGING_LEVEL", "WARNING")   # not its schema-migration chatter
    logging.getLogger("mlflow").setLevel(os.environ["MLFLOW_LOGGING_LEVEL"])
    os.environ.setdefault("HF_HUB_OFFLINE", "1")
    lay.data_dir.mkdir(parents=True, exist_ok=True)
    st = _Stages(lay.data_dir, log)
    log(f"slm-scaling demo: {_rel(study_path)} -> data in {_rel(lay.data_dir)}/, runs in "
        f"{_rel(lay.study.study_dir)}/")
    text = _stage_text(st, lay, spec)
    speech = _stage_speech(st, lay, spec, text["fingerprint"], log)
    evals = _stage_evalsets(st, lay, spec, speech["fingerprint"], log)
    textlm = _stage_textlm(st, lay, spec, text["fingerprint"], evals["fingerprint"], log)
    data_fp = _digest([text["fingerprint"], speech["fingerprint"], evals["fingerprint"], textlm["fingerprint"]])
    _stage_study(st, lay, spec, data_fp, log)
    uri = None
    if lay.study.tracking.enabled:

        uri = lay.study.tracking.uri or default_uri(lay.study.study_dir.resolve())
    wsd_path = _stage_wsd(st, lay, spec, data_fp, log)
    _stage_report(st, lay, spec, uri, log, wsd_path)
    out = lay.study.study_dir / "report"
    total = time.time() - t0
    summary = _summary(out / "fits.json")
    log("")
    log("stage times: " + ", ".join(f"{s.name} {s.seconds:.1f}s{' (reused)' if s.reused else ''}" for s in st.times)
        + f"; total {duration(total)} ({total:.1f}s)")
    for line in summary:
        log(line)
    log(f"report: {_rel(out / 'report.md')} (and {_rel(out / 'report.html')}, self-contained)")
    cmd = None
    if uri:
        cmd, bare = ui_commands(study_path, lay.study)
        log(f"MLflow UI on this study: {cmd}")
        log(f"  (it runs: {bare})")
    return DemoResult(study_dir=lay.study.study_dir, data_dir=lay.data_dir, report_md=out / "report.md",
                      report_html=out / "report.html", fits_json=out / "fits.json", tracking_uri=uri,
                      mlflow_command=cmd, stages=st.times, seconds=total, summary=summary)
