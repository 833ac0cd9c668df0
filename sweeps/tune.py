"""`launch.py tune`: an optuna search over training settings for small members, trials run as cells.

Per tuned member (a family member at one token budget):

* an optuna study `<study>/<family>/<member>` in `tune.storage` (default `sqlite:///<study dir>/optuna.db`,
  any optuna RDB URL works), opened with `load_if_exists`, so a second `tune` continues it;
* trials are asked in batches of `tune.trials_per_batch` (TPE, reseeded from `tune.seed` and the number of
  trials so far before each batch, so an interrupted-and-resumed search draws what an uninterrupted one
  would); each trial is a cell (the member's RunSpec at the tuning budget with the trial's settings,
  keyed like any cell) in `<study dir>/tune/<family>-<member>/trial-NNNN/`, dispatched through the same
  submitit executors as `submit` (local with lock-file slots, Slurm arrays, debug) and the same code
  snapshot;
* the driver polls the trials' state.json; a DONE trial is told its final held-out loss
  (`tune.metric`: the speech stream by default), a FAILED one is resubmitted up to executor.max_retries
  times and then told FAIL (a diverged loss is FAIL too);
* pruning: with `eval.every_tokens`, the intermediate held-out losses in each running trial's
  metrics.jsonl are reported to optuna as they appear (step = evaluation index, so trials with
  different batch sizes compare at the same token counts) and a median pruner cancels trials worse
  than the completed trials' median at the same step. Within the first batch nothing can be pruned
  (no trial is complete yet); later batches are compared against earlier ones. Without
  eval.every_tokens (e.g. examples/tiny.yaml) there are no intermediate values and nothing is pruned;
* resuming: trials that optuna holds as RUNNING (asked by a `tune` that was interrupted) are picked
  up first: told if their cell is DONE, waited for if their job is still live, resubmitted (resuming
  from the cell's checkpoint) otherwise. Finished trials are never asked again; `--trials N` stops
  once the member's study holds N finished trials (complete, pruned or failed);
* MLflow (when tracking is enabled): a parent run `tune-<member>` in the study's experiment, each
  trial's cell run (created by the cell's own mirror) tagged `mlflow.parentRunId` = the parent, the
  parent logging each trial's value and the best so far, and optuna's matplotlib plots as artifacts.

After every `tune`, `<study dir>/tuned.json` is rewritten from the best trial of every tuned member of
the study (analysis.lr_law: lr_opt(N) = a N^b, and batch_tokens when it was searched); `lr: tuned` in the
training section then resolves per cell (sweeps.grid).
"""
from __future__ import annotations

import dataclasses
import math
import sys
import time
import warnings
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Callable, Optional

import numpy as np

from analysis.lr_law import TUNED_NAME, build_tuned, describe_law, write_tuned as write_tuned_json
from common.mlflow_contract import ensure_experiment
from common.rundir import RunDir
from scaling.config import TrainingConfig
from scaling import tracking
from scaling.errors import InputError
from scaling.spec import RunSpec
from scaling.tracking import default_uri, read_record, redact_text, redact_uri
from scaling.typed_config import from_dict

from . import scheduler
from .cell_job import CellJob
from .lifecycle import Watched, check_tracking, study_lock, submit_cells, wait_cells
from .grid import expand, resolve_families
from .preflight import preflight
from .study import TUNABLE, Grid, Study, StudyError, TuneParam

TUNE_DIR = "tune"
PARENT_TAG = "slm.tune"          # on the parent run: the optuna study name
TRIAL_TAG = "slm.tune.trial"     # on a trial's run: its optuna trial number
PARENT_RUN_ID = "mlflow.parentRunId"
KIND_TAG = "kind"                # analysis.mlflow_io skips runs whose kind is not `cell`


@dataclass
class Target:
    """One member tuned at one budget."""
    family: str
    spec: str                  # the member as the study names it (ladder rung, catalog name, folder)
    member: str                # its name in cell keys
    setup: str
    tokens: int
    params_total: int
    params_nonembedding: int

    @property
    def name(self) -> str:
        return f"{self.family}/{self.member}"


@dataclass
class MemberReport:
    target: Target
    optuna_study: str
    storage: str               # redacted
    trials: list[dict] = field(default_factory=list)   # number, state, value, params
    asked: int = 0             # trials asked by this invocation
    resumed: int = 0           # trials of an earlier invocation finished by this one
    dispatched: int = 0        # cells submitted by this invocation
    parent_run_id: Optional[str] = None
    best: Optional[dict] = None

    def counts(self) -> dict[str, int]:
        out: dict[str, int] = {}
        for t in self.trials:
            out[t["state"]] = out.get(t["state"], 0) + 1
        return out


@dataclass
class TuneResult:
    members: list[MemberReport]
    tuned_path: Optional[Path]
    tuned: Optional[dict]


# --------------------------------------------------------------------------------------------------
# The search space and the trial cells


def storage_uri(study: Study) -> str:
    return study.tune.storage or f"sqlite:///{Path(study.study_dir).resolve()}/optuna.db"


def search_space(study: Study) -> dict[str, TuneParam]:
    """The default space (lr log-uniform over [lr/10, 10 lr], warmup over [0, 0.1], batch_tokens in
    {batch/2, batch, 2 batch}) with the study's `tune.space` merged over it (null drops a default)."""
    tr = study.training
    lr = tr.lr if tr.lr != "tuned" else None
    space: dict[str, Optional[TuneParam]] = {
        "lr": TuneParam(low=_sig(lr / 10) if lr else 1e-4, high=_sig(lr * 10) if lr else 1e-2, log=True),
        "warmup": TuneParam(low=0.0, high=0.1)}
    b = tr.batch_tokens if tr.batch_tokens != "tuned" else 16 * tr.context
    space["batch_tokens"] = TuneParam(choices=sorted({c for c in (b // 2, b, 2 * b) if c >= tr.context}))
    space.update(study.tune.space)
    out = {k: v for k, v in space.items() if v is not None}
    if not out:
        raise StudyError(f"{study.source}: tune.space: nothing left to search")
    for name, p in out.items():  # every end of every range must make a valid training section
        for v in (p.choices if p.choices is not None else [p.low, p.high]):
            try:
                trial_training(study, {name: int(v) if TUNABLE[name] is int and p.choices is None else v})
            except InputError as e:
                raise StudyError(f"{study.source}: tune.space.{name}: {v!r} does not make a valid training "
                                 f"section ({e})") from None
    return out


def _sig(v: float) -> float:
    return float(f"{v:.6g}")


def min_lr_ratio(study: Study) -> float:
    if study.tune.min_lr_ratio is not None:
        return study.tune.min_lr_ratio
    tr = study.training
    return _sig(tr.min_lr / tr.lr) if tr.lr != "tuned" and tr.lr > 0 else 0.1


def trial_training(study: Study, values: dict[str, Any]) -> TrainingConfig:
    """The study's training section with a trial's settings (min_lr follows lr by min_lr_ratio)."""
    d = dataclasses.asdict(study.training)
    d.update(values)
    if "lr" in values:
        d["min_lr"] = _sig(values["lr"] * min_lr_ratio(study))
    return from_dict(TrainingConfig, d, "training")


def _derived(study: Study, target_family: str, spec: str, grid: Grid, training: TrainingConfig) -> Study:
    """The study reduced to one member of one family on `grid` with `training`."""
    fam = study.families[target_family]
    members = {spec: fam.members[spec]} if isinstance(fam.members, dict) else [spec]
    fam = dataclasses.replace(fam, members=members, weights={k: v for k, v in fam.weights.items() if k == spec})
    out = dataclasses.replace(study, families={target_family: fam}, grid=grid, training=training)
    out.source = study.source
    return out


def find_target(study: Study, name: str, tokens: Optional[float] = None) -> Target:
    """The member `name` (its name, the study's spelling, or `family/member`) at the tuning budget:
    `tokens`, else tune.tokens, else the member's smallest budget in the study's grid."""
    found = []
    for rf in resolve_families(study):
        for spec, member in rf.members:
            if name in (member.name, spec, f"{rf.name}/{member.name}", f"{rf.name}/{spec}"):
                found.append((rf.name, spec, member.name))
    if not found:
        names = [f"{rf.name}/{m.name}" for rf in resolve_families(study) for _, m in rf.members]
        raise StudyError(f"{study.source}: --member {name}: no such member; expected one of {', '.join(names)}")
    if len(found) > 1:
        raise StudyError(f"{study.source}: --member {name}: ambiguous; expected one of "
                         f"{', '.join(f'{f}/{m}' for f, _, m in found)}")
    family, spec, member = found[0]
    placeholder = dataclasses.replace(study.training, lr=1.0, batch_tokens=study.training.context)
    budget = tokens or study.tune.tokens
    grid = dataclasses.replace(study.grid, variants={}, include_base=True, textless_twin=False)
    if budget is not None:
        grid = Grid(tokens=[float(budget)], flops_convention=study.grid.flops_convention)
    cells = expand(_derived(study, family, spec, grid, placeholder))
    cell = min(cells, key=lambda c: c.tokens)
    return Target(family, spec, member, cell.setup, cell.tokens, cell.params.total, cell.params.nonembedding)


def trial_cell(study: Study, target: Target, values: dict[str, Any]) -> RunSpec:
    """A trial's cell: the member at the tuning budget with the trial's settings (variant `tune`)."""
    grid = Grid(tokens=[float(target.tokens)], flops_convention=study.grid.flops_convention)
    (cell,) = expand(_derived(study, target.family, target.spec, grid, trial_training(study, values)))
    cell.variant = "tune"
    cell.trunk = None   # a wsd trial trains its own schedule alone: it has no trunk beside it
    if study.tracking.enabled:  # the run dir is nested: name the study's store, not one beside the trial

        cell.tracking = {**cell.tracking, "uri": study.tracking.uri or default_uri(study.study_dir)}
    return cell


def member_dir(study: Study, target: Target) -> Path:
    return study.study_dir / TUNE_DIR / f"{target.family}-{target.member}"


def trial_dir(study: Study, target: Target, number: int) -> Path:
    return member_dir(study, target) / f"trial-{number:04d}"


def _ensure_trial_dir(run_dir: Path, cell: RunSpec) -> None:
    RunDir(run_dir).create(cell.to_json(), tracking_follows=False)


# --------------------------------------------------------------------------------------------------
# Values read from a trial's run dir


def metric_value(val_loss: dict, metric: str) -> Optional[float]:
    """The tuned metric from a {stream: loss} mapping (`mean`: over the streams present)."""
    if not isinstance(val_loss, dict) or not val_loss:
        return None
    if metric == "mean":
        values = [float(v) for v in val_loss.values() if isinstance(v, (int, float))]
        return sum(values) / len(values) if values else None
    v = val_loss.get(metric)
    return float(v) if isinstance(v, (int, float)) else None


def intermediate_values(run_dir: Path, metric: str, every: int) -> dict[int, float]:
    """{evaluation index: tuned metric} from the held-out losses in metrics.jsonl (index = tokens //
    every, the evaluation boundary the loss was taken at)."""
    out: dict[int, float] = {}
    for line in RunDir(run_dir).metrics():
        losses = {k.split("/", 1)[1]: v for k, v in line.items() if k.startswith("val_loss/")}
        v = metric_value(losses, metric)
        if v is not None and math.isfinite(v) and "tokens" in line:
            out.setdefault(int(line["tokens"]) // every, v)
    return out


# --------------------------------------------------------------------------------------------------
# MLflow: the parent run


class _Parent:
    """The tune parent run; every method swallows tracking errors (a warning), like the cells' mirror."""

    def __init__(self, study: Study, target: Target, ostudy, log: Callable[[str], None]):
        self.client = self.run_id = None
        self.log = log
        self.tagged: set[int] = set()
        if not study.tracking.enabled:
            return

        self.uri = study.tracking.uri or tracking.default_uri(study.study_dir)
        try:
            self._open(study, target, ostudy)
        except Exception as e:  # tuning goes on; trials still mirror themselves
            self._warn("open the tune parent run", e)
            self.client = None

    def _warn(self, what: str, e: Exception) -> None:

        print(f"warning: MLflow: cannot {what} ({redact_text(f'{type(e).__name__}: {e}')[:300]})", file=sys.stderr)

    def _open(self, study: Study, target: Target, ostudy) -> None:
        from mlflow import MlflowClient  # heavy: mlflow kept off plan/status start-up


        client = MlflowClient(tracking_uri=self.uri)
        exp_id = ensure_experiment(client, study.tracking.experiment or study.name,
                                             f"slm-scaling study {study.name}", self.uri)
        known = ostudy.user_attrs.get("mlflow_parent", {}).get(tracking.redact_uri(self.uri))
        run = tracking._existing_run(client, known)
        if run is None:
            found = client.search_runs([exp_id], filter_string=f"tags.`{PARENT_TAG}` = '{ostudy.study_name}'",
                                       max_results=1)
            run = found[0] if found else None
        if run is None:
            run = client.create_run(exp_id, run_name=f"tune-{target.member}", tags={
                PARENT_TAG: ostudy.study_name, KIND_TAG: "tune", "family": target.family, "member": target.member,
                "setup": target.setup, "study": study.name, "tokens_budget": str(target.tokens)})
            space = {k: dataclasses.asdict(v) for k, v in search_space(study).items()}
            tracking._log_params(client, run.info.run_id, {
                "family": target.family, "member": target.member, "setup": target.setup, "tokens": target.tokens,
                "params_total": target.params_total, "params_nonembedding": target.params_nonembedding,
                "space": space, "trials_per_batch": study.tune.trials_per_batch, "seed": study.tune.seed,
                "metric": study.tune.metric, "pruner": study.tune.pruner, "min_lr_ratio": min_lr_ratio(study),
                "storage": tracking.redact_uri(storage_uri(study)), "optuna_study": ostudy.study_name})
        else:
            client.update_run(run.info.run_id, status="RUNNING")
        self.client, self.run_id = client, run.info.run_id
        attrs = dict(ostudy.user_attrs.get("mlflow_parent", {}))
        attrs[tracking.redact_uri(self.uri)] = self.run_id
        ostudy.set_user_attr("mlflow_parent", attrs)

    def tag_child(self, run_dir: Path, number: int) -> None:
        """Make the trial's MLflow run (once its mirror has created it) a child of the parent."""
        if self.client is None or number in self.tagged:
            return

        run_id = read_record(run_dir).get("run_id")
        if not run_id:
            return
        try:
            from mlflow.entities import RunTag  # heavy: mlflow kept off plan/status start-up

            # kind: analysis.mlflow_io harvests cell runs only (tuning trials are not grid cells)
            self.client.log_batch(run_id, tags=[RunTag(PARENT_RUN_ID, self.run_id), RunTag(TRIAL_TAG, str(number)),
                                                RunTag(KIND_TAG, "tune-trial")])
            self.tagged.add(number)
        except Exception as e:
            self._warn(f"tag trial {number}'s run", e)

    def told(self, number: int, value: Optional[float], best: Optional[float], n_finished: int) -> None:
        if self.client is None:
            return
        try:
            if value is not None and math.isfinite(value):
                self.client.log_metric(self.run_id, "trial_value", value, step=number)
            if best is not None:
                self.client.log_metric(self.run_id, "best_value", best, step=n_finished)
        except Exception as e:
            self._warn("log to the parent run", e)

    def close(self, ostudy, out_dir: Path, finished: bool) -> None:
        """Optuna's plots as artifacts, the best trial as tags, and the run's end status."""
        if self.client is None:
            return
        try:
            for path in plots(ostudy, out_dir):
                self.client.log_artifact(self.run_id, str(path), "optuna")
            best = _best(ostudy)
            if best is not None:
                self.client.set_tag(self.run_id, "best.trial", str(best.number))
                self.client.log_metric(self.run_id, "best/val_loss", best.value)
                for k, v in best.params.items():
                    if isinstance(v, (int, float)):
                        self.client.log_metric(self.run_id, f"best/{k}", float(v))
            self.client.set_terminated(self.run_id, "FINISHED" if finished else "KILLED")
        except Exception as e:
            self._warn("finish the parent run", e)


def plots(ostudy, out_dir: Path) -> list[Path]:
    """Optuna's matplotlib plots of the study as PNGs: optimisation history, slice, parameter
    importances (two complete trials or more) and intermediate values (when any were reported)."""
    import matplotlib  # heavy: figures only

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt  # heavy: figures only
    from optuna.trial import TrialState  # heavy: optuna only for tune
    from optuna.visualization import matplotlib as ovm  # heavy: optuna only for tune

    complete = ostudy.get_trials(deepcopy=False, states=(TrialState.COMPLETE,))
    if not complete:
        return []
    wanted = {"optimization_history": ovm.plot_optimization_history, "slice": ovm.plot_slice}
    if len(complete) >= 2:
        wanted["param_importances"] = ovm.plot_param_importances
    if any(t.intermediate_values for t in ostudy.get_trials(deepcopy=False)):
        wanted["intermediate_values"] = ovm.plot_intermediate_values
    out_dir.mkdir(parents=True, exist_ok=True)
    paths = []
    for name, fn in wanted.items():
        try:
            with warnings.catch_warnings():
                warnings.simplefilter("ignore")
                ax = fn(ostudy)
            fig = np.ravel(ax)[0].figure if not hasattr(ax, "figure") else ax.figure
            fig.set_size_inches(max(fig.get_size_inches()[0], 6.4), max(fig.get_size_inches()[1], 4.8))
            path = out_dir / f"{name}.png"
            fig.savefig(path, dpi=100, bbox_inches="tight")
            plt.close(fig)
            paths.append(path)
        except Exception as e:  # e.g. importances when every complete trial drew the same values
            print(f"warning: optuna plot {name} skipped ({type(e).__name__}: {e})", file=sys.stderr)
    return paths


# --------------------------------------------------------------------------------------------------
# The search


def _best(ostudy):
    from optuna.trial import TrialState  # heavy: optuna only for tune

    complete = ostudy.get_trials(deepcopy=False, states=(TrialState.COMPLETE,))
    return min(complete, key=lambda t: t.value) if complete else None


def _sampler(study: Study, n_trials: int):
    import optuna  # heavy: optuna only for tune

    with warnings.catch_warnings():
        warnings.simplefilter("ignore")  # constant_liar is "experimental"
        return optuna.samplers.TPESampler(seed=(study.tune.seed * 1_000_003 + n_trials) % 2 ** 32,
                                          n_startup_trials=study.tune.trials_per_batch, constant_liar=True)


def open_optuna(study: Study, target: Target):
    """The member's optuna study (created, or continued with load_if_exists)."""
    import optuna  # heavy: optuna only for tune

    optuna.logging.set_verbosity(optuna.logging.WARNING)
    url = storage_uri(study)
    if url.startswith("sqlite:///"):
        Path(url[len("sqlite:///"):]).parent.mkdir(parents=True, exist_ok=True)
        storage = optuna.storages.RDBStorage(url, engine_kwargs={"connect_args": {"timeout": 60}})
    else:
        storage = url
    tb = study.tune.trials_per_batch
    pruner = (optuna.pruners.MedianPruner(n_startup_trials=max(1, min(5, tb)), n_warmup_steps=0)
              if study.tune.pruner == "median" and study.eval.every_tokens else optuna.pruners.NopPruner())
    name = f"{study.name}/{target.family}/{target.member}"
    try:
        ostudy = optuna.create_study(study_name=name, storage=storage, direction="minimize", load_if_exists=True,
                                     sampler=_sampler(study, 0), pruner=pruner)
    except Exception as e:  # a bad URL, an unreachable database

        raise StudyError(f"{study.source}: tune.storage: cannot open optuna storage "
                         f"({redact_text(f'{type(e).__name__}: {e}')[:300]})") from None
    attrs = ostudy.user_attrs
    want = {"slm_study": study.name, "family": target.family, "member": target.member, "setup": target.setup,
            "tokens": target.tokens, "params_total": target.params_total,
            "params_nonembedding": target.params_nonembedding, "metric": study.tune.metric,
            "min_lr_ratio": min_lr_ratio(study)}
    for key in ("tokens", "metric"):
        if key in attrs and attrs[key] != want[key]:
            raise StudyError(f"{study.source}: tune: the optuna study {name} was tuned with {key} {attrs[key]}, "
                             f"not {want[key]}; keep it (--tokens / tune.tokens, tune.metric) or use another "
                             "tune.storage")
    for key, value in want.items():
        if attrs.get(key) != value:
            ostudy.set_user_attr(key, value)
    return ostudy


def _suggest(trial, name: str, p: TuneParam):
    if p.choices is not None:
        return trial.suggest_categorical(name, p.choices)
    if TUNABLE[name] is int:
        return trial.suggest_int(name, int(p.low), int(p.high), log=p.log)
    return trial.suggest_float(name, p.low, p.high, log=p.log)


@dataclass
class _Running:
    number: int
    trial: Any                 # optuna.trial.Trial
    run_dir: Path
    cell: RunSpec
    reported: set = field(default_factory=set)


class _Member:
    """The search for one member (see the module docstring)."""

    def __init__(self, study: Study, target: Target, n_trials: int, kind: str, job_class: type,
                 log: Callable[[str], None], poll_s: float):
        self.study, self.target, self.n_trials, self.kind = study, target, n_trials, kind
        self.job_class, self.log, self.poll_s = job_class, log, poll_s
        self.space = search_space(study)
        self.ostudy = open_optuna(study, target)
        self.report = MemberReport(target, self.ostudy.study_name, _redact(storage_uri(study)))
        self.parent = _Parent(study, target, self.ostudy, log)
        self.report.parent_run_id = self.parent.run_id

    # -- the loop ----------------------------------------------------------------------------------

    def run(self) -> MemberReport:
        import optuna  # heavy: optuna only for tune
        from optuna.trial import TrialState  # heavy: optuna only for tune

        finished_ok = False
        try:
            first = True
            while True:
                trials = self.ostudy.get_trials(deepcopy=False)
                done = [t for t in trials if t.state.is_finished()]
                inflight = [t for t in trials if t.state == TrialState.RUNNING]
                n_new = max(0, min(self.study.tune.trials_per_batch - len(inflight),
                                   self.n_trials - len(done) - len(inflight)))
                if not inflight and n_new == 0:
                    break
                if first and inflight:
                    self.log(f"{self.target.name}: resuming {len(inflight)} trial(s) of an interrupted tune: "
                             + ", ".join(str(t.number) for t in inflight))
                    self.report.resumed += len(inflight)
                first = False
                batch = {t.number: optuna.trial.Trial(self.ostudy, t._trial_id) for t in inflight}
                params = {t.number: dict(t.params) for t in inflight}
                self.ostudy.sampler = _sampler(self.study, len(trials))
                for _ in range(n_new):
                    trial = self.ostudy.ask()
                    params[trial.number] = {name: _suggest(trial, name, p) for name, p in self.space.items()}
                    trial.set_user_attr("run_dir", str(trial_dir(self.study, self.target, trial.number)))
                    batch[trial.number] = trial
                    self.report.asked += 1
                self._run_batch(batch, params)
            finished_ok = True
        finally:
            self.parent.close(self.ostudy, member_dir(self.study, self.target) / "plots", finished_ok)
        for t in self.ostudy.get_trials(deepcopy=False):
            self.report.trials.append({"number": t.number, "state": t.state.name, "value": t.value,
                                       "params": dict(t.params), "run_dir": t.user_attrs.get("run_dir"),
                                       "key": t.user_attrs.get("key"), "error": t.user_attrs.get("error")})
        best = _best(self.ostudy)
        if best is not None:
            self.report.best = {"number": best.number, "value": best.value, "params": dict(best.params)}
        return self.report

    def _run_batch(self, batch: dict[int, Any], params: dict[int, dict]) -> None:
        """Dispatch the batch's trial cells (those without a result or a live job) and wait for them all
        through the shared wait loop, telling optuna as each ends and pruning on the way."""
        from optuna.trial import TrialState  # heavy: optuna only for tune

        running: dict[str, _Running] = {}
        submit: list[_Running] = []
        frozen = {t.number: t for t in self.ostudy.get_trials(deepcopy=False)}
        for number in sorted(batch):
            trial = batch[number]
            if set(params[number]) != set(self.space):  # interrupted while drawn, or tune.space changed since
                self._tell(trial, number, None, TrialState.FAIL,
                           f"its settings ({', '.join(sorted(params[number])) or 'none'}) do not match tune.space "
                           f"({', '.join(sorted(self.space))}): interrupted while drawn, or the space changed")
                continue
            run_dir = trial_dir(self.study, self.target, number)
            try:
                cell = trial_cell(self.study, self.target, params[number])
            except InputError as e:
                self._tell(trial, number, None, TrialState.FAIL, str(e))
                continue
            _ensure_trial_dir(run_dir, cell)
            trial.set_user_attr("key", cell.key)
            r = _Running(number, trial, run_dir, cell, reported=set(frozen[number].intermediate_values))
            running[run_dir.name] = r
            state = RunDir(run_dir).state()
            s = state.get("state")
            if s == "DONE" or (s == "FAILED" and state.get("failures", 1) > self.study.executor.max_retries):
                continue   # the wait loop tells it at once
            job = state.get("job_id")
            if job and state.get("executor") == self.kind and job in self._live([job]):
                self.log(f"{self.target.name}: trial {number}: job {job} still live, waiting for it")
                continue
            if s == "FAILED":
                self._retry_note(r, state)
            submit.append(r)
        self._dispatch(submit)
        every = self.study.eval.every_tokens

        def on_poll(open_: dict[str, Watched]) -> None:
            for key in open_:
                self.parent.tag_child(running[key].run_dir, running[key].number)

        def on_live(w: Watched) -> bool:
            r = running[w.key]
            if not every:
                return False
            self._report(r, every)
            if r.reported and r.trial.should_prune():
                scheduler.cancel(self.kind, [w.state.get("job_id")])
                last = max(r.reported)
                self.log(f"{self.target.name}: trial {r.number} pruned at evaluation {last} "
                         f"(job {w.state.get('job_id')} cancelled)")
                r.trial.set_user_attr("pruned_at_eval", last)
                self._tell(r.trial, r.number, None, TrialState.PRUNED)
                return True
            return False

        def on_end(w: Watched, how: str) -> None:
            r = running[w.key]
            self.parent.tag_child(r.run_dir, r.number)
            if every:
                self._report(r, every)
            if how == "DONE":
                result = RunDir(r.run_dir).result() or {}
                value = metric_value(result.get("val_loss", {}), self.study.tune.metric)
                if value is None or not math.isfinite(value):
                    self._tell(r.trial, r.number, None, TrialState.FAIL,
                               f"no finite val_loss[{self.study.tune.metric}] in result.json (diverged?)")
                else:
                    self._tell(r.trial, r.number, value, TrialState.COMPLETE)
            elif how == "FAILED":
                self._tell(r.trial, r.number, None, TrialState.FAIL, w.state.get("error") or "failed")
            elif how == "LOST":
                self._tell(r.trial, r.number, None, TrialState.FAIL,
                           f"its job ended {w.lost} times without a result ({w.state.get('error') or w.state.get('state')})")

        def resubmit(keys: list[str]) -> None:
            for key in keys:
                self._retry_note(running[key], RunDir(running[key].run_dir).state())
            self._dispatch([running[k] for k in keys])

        wait_cells({k: r.run_dir for k, r in running.items()}, self.kind, self.study.executor.max_retries,
                   resubmit, on_end=on_end, on_live=on_live, on_poll=on_poll, poll_s=self.poll_s)

    def _retry_note(self, r: _Running, state: dict) -> None:
        if state.get("state") == "FAILED":
            self.log(f"{self.target.name}: trial {r.number} failed ({state.get('error')}); retry "
                     f"{state.get('failures', 1)}/{self.study.executor.max_retries}")
        else:
            self.log(f"{self.target.name}: trial {r.number}: its job ended while the cell was "
                     f"{state.get('state')}; resubmitting (it resumes from its checkpoint)")

    def _report(self, r: _Running, every: int) -> None:
        for step, value in sorted(intermediate_values(r.run_dir, self.study.tune.metric, every).items()):
            if step not in r.reported:
                r.trial.report(value, step)
                r.reported.add(step)

    def _tell(self, trial, number: int, value: Optional[float], state, error: Optional[str] = None) -> None:
        from optuna.trial import TrialState  # heavy: optuna only for tune

        if error:
            trial.set_user_attr("error", error[:500])
            self.log(f"{self.target.name}: trial {number} FAIL: {error}")
        # skip_if_finished: another `tune` of the same member may have told it already
        if state == TrialState.COMPLETE:
            self.ostudy.tell(trial, value, skip_if_finished=True)
        else:
            self.ostudy.tell(trial, state=state, skip_if_finished=True)
        done = [t for t in self.ostudy.get_trials(deepcopy=False) if t.state.is_finished()]
        best = _best(self.ostudy)
        if state == TrialState.COMPLETE:
            self.log(f"{self.target.name}: trial {number} {self.study.tune.metric} val_loss {value:.4f} "
                     f"(best {best.value:.4f}, trial {best.number}); {len(done)} of {self.n_trials} finished")
        self.parent.told(number, value, best.value if best else None, len(done))

    # -- the scheduler -----------------------------------------------------------------------------

    def _live(self, job_ids: list) -> set:
        ids = [j for j in job_ids if j]
        if not ids or self.kind == "debug":
            return set()
        return scheduler.live_slurm_jobs(ids) if self.kind == "slurm" else scheduler.live_local_jobs(ids)

    def _dispatch(self, runs: list[_Running]) -> None:
        """Submit the trials' cells through the shared submit path, under the study's submit lock."""
        if not runs:
            return
        with study_lock(self.study.study_dir, log=self.log):
            out = submit_cells(self.study, self.kind, [(r.cell, r.run_dir) for r in runs], job_class=self.job_class,
                               log=self.log)
        self.report.dispatched += len(out.job_ids)
        jobs = [f"{r.number}" + (f" (job {out.job_ids[r.run_dir.name]})" if r.run_dir.name in out.job_ids
                                  and self.kind != "debug" else "") for r in runs if r.run_dir.name in out.job_ids]
        self.log(f"{self.target.name}: dispatched trial(s) {', '.join(jobs)} ({self.kind})")
        for r in runs:
            if r.run_dir.name in out.skipped:
                self.log(f"{self.target.name}: trial {r.number} not dispatched: {out.skipped[r.run_dir.name]}")


def _redact(uri: str) -> str:

    return redact_uri(uri)


# --------------------------------------------------------------------------------------------------
# tuned.json


def collect_tuned(study: Study) -> dict[str, dict]:
    """The best complete trial of every member the study's optuna storage holds."""
    import optuna  # heavy: optuna only for tune
    from optuna.trial import TrialState  # heavy: optuna only for tune

    optuna.logging.set_verbosity(optuna.logging.WARNING)
    url = storage_uri(study)
    members: dict[str, dict] = {}
    for name in optuna.get_all_study_names(storage=url):
        if not name.startswith(f"{study.name}/"):
            continue
        s = optuna.load_study(study_name=name, storage=url)
        a = s.user_attrs
        trials = s.get_trials(deepcopy=False)
        complete = [t for t in trials if t.state == TrialState.COMPLETE]
        if not complete or "params_total" not in a:
            continue
        best = min(complete, key=lambda t: t.value)
        entry = {"family": a["family"], "member": a["member"], "setup": a.get("setup"),
                 "params_total": a["params_total"], "params_nonembedding": a["params_nonembedding"],
                 "tokens": a["tokens"], "trials": sum(t.state.is_finished() for t in trials),
                 "complete": len(complete), "best_trial": best.number, "val_loss": best.value,
                 "metric": a.get("metric"), "min_lr_ratio": a.get("min_lr_ratio"),
                 "best_params": dict(best.params), "run_dir": best.user_attrs.get("run_dir")}
        for key in ("lr", "batch_tokens"):
            if key in best.params:
                entry[key] = best.params[key]
        members[f"{a['family']}/{a['member']}"] = entry
    return members


def write_tuned(study: Study) -> tuple[Optional[Path], Optional[dict]]:
    """Refit the law over every tuned member and write <study dir>/tuned.json (None when no member has
    a complete trial)."""

    members = collect_tuned(study)
    if not members:
        return None, None
    doc = build_tuned(study.name, members, params=study.tune.params, metric=study.tune.metric, seed=study.tune.seed)
    doc["storage"] = _redact(storage_uri(study))
    doc["updated"] = time.strftime("%Y-%m-%dT%H:%M:%S%z")
    return write_tuned_json(study.study_dir / TUNED_NAME, doc), doc


def tune(study: Study, members: Optional[list[str]] = None, trials: Optional[int] = None,
         kind: Optional[str] = None, tokens: Optional[float] = None, log: Callable[[str], None] = print,
         job_class: type = CellJob, poll_s: float = 2.0) -> TuneResult:
    """Tune each member (`members`, default tune.members) to `trials` finished trials (default
    tune.trials), then rewrite tuned.json. `job_class` is the callable run per trial (CellJob)."""
    kind = kind or study.executor.kind
    check_tracking(study, kind)
    source = study.source
    study = dataclasses.replace(study, root=str(Path(study.root).resolve()))
    study.source = source
    preflight(study)  # issue 16: bad data is one line before any trial runs
    names = members or study.tune.members
    if not names:
        raise StudyError(f"{source}: tune: name the member(s) to tune with --member (or tune.members)")
    n = study.tune.trials if trials is None else trials
    if n < 1:
        raise StudyError(f"--trials: expected at least 1, got {n}")
    targets = [find_target(study, name, tokens) for name in names]
    search_space(study)  # a bad space is an error before anything runs
    reports = []
    for target in targets:
        log(f"{target.name}: tuning at {target.tokens:,} tokens (N = {target.params_total:,}), "
            f"{n} trials in batches of {study.tune.trials_per_batch} ({kind})")
        reports.append(_Member(study, target, n, kind, job_class, log, poll_s).run())
    path, doc = write_tuned(study)
    return TuneResult(reports, path, doc)


def format_result(result: TuneResult) -> str:
    lines = []
    for r in result.members:
        c = r.counts()
        counts = ", ".join(f"{c[s]} {s.lower()}" for s in ("COMPLETE", "PRUNED", "FAIL", "RUNNING") if c.get(s))
        lines.append(f"{r.target.name}: {len(r.trials)} trials ({counts}); this run asked {r.asked}, "
                     f"resumed {r.resumed}, dispatched {r.dispatched} cell(s)")
        if r.best:
            vals = " ".join(f"{k} {v:.3g}" if isinstance(v, float) else f"{k} {v}" for k, v in r.best["params"].items())
            lines.append(f"  best trial {r.best['number']}: val_loss {r.best['value']:.4f} | {vals}")
        lines.append(f"  optuna study {r.optuna_study} in {r.storage}"
                     + (f"; MLflow parent run {r.parent_run_id}" if r.parent_run_id else ""))
    if result.tuned_path is not None:

        lines.append(f"tuned.json: {result.tuned_path} ({len(result.tuned['members'])} member(s))")
        lines += ["  " + l for l in describe_law(result.tuned).splitlines()]
    return "\n".join(lines)
