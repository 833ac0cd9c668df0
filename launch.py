#!/usr/bin/env python3
"""slm-scaling command line: parse, call one package function, print. No logic lives here."""
from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path

from common.errors import InputError
from common.mlflow_contract import redact_uri
from common.rundir import LEASE_BUSY_EXIT, LeaseBusy
from sweeps.study import StudyError, load_study

# Each cmd_* imports its own command's modules inside the function, on purpose: `plan` and `status` must
# not pay for torch, transformers, mlflow, optuna or submitit, which only some commands need.


def cmd_plan(args: argparse.Namespace) -> None:
    from sweeps.plan import cell_rows, format_plan, make_plan

    plan = make_plan(load_study(args.study, root=args.root))
    if args.json:
        print(json.dumps(cell_rows(plan), indent=1))
    else:
        print(format_plan(plan))


class _Parser(argparse.ArgumentParser):
    """Bad flags are one line naming the command and the problem, exit code 2."""

    def error(self, message: str) -> None:  # type: ignore[override]
        self.exit(2, f"error: {self.prog}: {message} (see {self.prog} --help)\n")


def cmd_train(args: argparse.Namespace) -> int:

    from scaling.train import train_cell

    target = Path(args.target)
    if target.is_dir():
        run_dir = target
    else:
        from sweeps.grid import expand
        from sweeps.rundirs import ensure_run_dir, select

        if not args.cell:
            raise StudyError(f"{target}: not a run directory; give a study file with --cell KEY")
        from sweeps.preflight import preflight

        study = load_study(target, root=args.root)
        cell = select(expand(study), args.cell)
        from sweeps.trunks import trunk_first

        preflight(study, [cell])  # before the run dir exists
        run_dir = ensure_run_dir(study, cell)
        first = trunk_first(study.study_dir, cell, expand(study))   # a WSD branch: its trunk up to its step
        if first is not None:
            code = _train_here(train_cell, *first)
            if code:
                return code

    return _train_here(train_cell, run_dir)


def _train_here(train_cell, run_dir: Path, until_step=None) -> int:
    try:
        status = train_cell(run_dir, until_step=until_step)
    except LeaseBusy as e:
        print(f"busy: {e}", file=sys.stderr)
        return LEASE_BUSY_EXIT
    print(f"{status}: {run_dir}")
    return 0 if status in ("DONE", "SEGMENT") else 3


def cmd_sync(args: argparse.Namespace) -> None:
    from sweeps.publish import sync

    study = load_study(args.study, root=args.root)
    written = sync(study, uri=args.uri)
    for key, n in written.items():
        print(f"{key}: {n} metric points written")
    print(f"synced {len(written)} run(s) of {study.name}"
          + (f" to {redact_uri(args.uri or study.tracking.uri)}" if (args.uri or study.tracking.uri) else ""))


def cmd_fit(args: argparse.Namespace) -> int | None:
    from analysis.commands import fit_csv
    from analysis.fitcsv import fit_data_constrained_csv

    if args.base is not None and not args.data_constrained:
        raise InputError("fit: --base needs --data-constrained (see fit --help)")
    if args.data_constrained:
        print(json.dumps(fit_data_constrained_csv(args.points, base=args.base, params_col=args.params_col,
                                                  tokens_col=args.tokens_col, loss_col=args.loss_col,
                                                  n_bootstrap=args.bootstrap, seed=args.seed), indent=1))
        return None
    fit = fit_csv(args.points, params_col=args.params_col, tokens_col=args.tokens_col,
                         loss_col=args.loss_col, group_col=args.group_col, n_bootstrap=args.bootstrap,
                         seed=args.seed, approach=args.approach, flops_col=args.flops_col, window=args.window)
    print(json.dumps(fit, indent=1))


def _study(args: argparse.Namespace):

    study = load_study(args.study, root=getattr(args, "root", None))
    if getattr(args, "tracking_uri", None):
        study.tracking.uri = args.tracking_uri
    return study


def cmd_submit(args: argparse.Namespace) -> int:
    from sweeps.dispatch import submit

    study = _study(args)
    report = submit(study, kind=args.executor, dry_run=args.dry_run, wait=not args.no_wait)
    for d in report.trunks + report.decisions:   # WSD trunks first: their branches start from them
        print(f"{d.key}: {d.action} ({d.reason})" + (f" job {report.job_ids[d.key]}" if d.key in report.job_ids
                                                     else ""))
    verb = "would submit" if args.dry_run else "submitted"
    print(f"{verb} {len(report.submitted)} of {len(report.decisions)} cells"
          + (f" in {report.arrays} array(s); code snapshot {report.snapshot}" if report.arrays else ""))
    failed = report.failed_in_process
    if failed:  # the debug executor ran them here: say so, and fail
        print(f"{len(failed)} of {len(report.ran)} cells run in this process did not finish: "
              + ", ".join(f"{k} ({report.ran[k]})" for k in failed), file=sys.stderr)
        return 1
    return 0


def cmd_status(args: argparse.Namespace) -> None:
    from sweeps.membership import not_in_study_note, select_cells
    from sweeps.status import collect, format_status, format_trunks, trunk_status

    study = _study(args)
    cells, _, left_out = select_cells(study, args.all_cells)
    print(format_status(collect(study, cells)) + format_trunks(trunk_status(study, cells)))
    if left_out:
        print(not_in_study_note(left_out))


def cmd_cancel(args: argparse.Namespace) -> None:
    from sweeps.status import cancel

    done = cancel(_study(args), args.cells)
    print(f"cancelled {len(done)} cell(s)" + "".join(f"\n{k}" for k in done))


def cmd_tracking_server(args: argparse.Namespace) -> None:
    from sweeps.tracking_server import serve

    serve(_study(args), host=args.host, port=args.port, workers=args.workers,
          backend_store_uri=args.backend_store_uri, sqlite=args.sqlite, postgres_dir=args.postgres_dir,
          postgres_port=args.postgres_port)


def cmd_ui(args: argparse.Namespace) -> int:
    from sweeps.ui import command_line, open_ui

    study = _study(args)
    if args.print_command:
        print(command_line(study, host=args.host, port=args.port))
        return 0
    return open_ui(study, host=args.host, port=args.port, browser=not args.no_browser)


def cmd_report(args: argparse.Namespace) -> None:
    from sweeps.membership import not_in_study_note
    from sweeps.publish import report

    study = _study(args)
    out = report(study, out_dir=args.out, mlflow=not args.no_mlflow, params_col=args.params_col,
                 loss_col=args.loss_col, n_bootstrap=args.bootstrap, all_cells=args.all_cells)
    if out["not_in_study"]:
        print(not_in_study_note(out["not_in_study"]))
    print(f"report of {out['n_runs']} runs: {out['report_md']}\n  {out['report_html']}\n  {out['fits_json']}")
    for fig in out["figures"]:
        print(f"  {fig}")
    if out.get("mlflow_run_id"):
        print(f"MLflow report run {out['mlflow_run_id']} in experiment {study.tracking.experiment or study.name}")


def cmd_recommend(args: argparse.Namespace) -> None:
    from analysis.commands import format_recommendation, recommend
    from sweeps.membership import not_in_study_note, select_cells
    from sweeps.plan import member_sizes

    study = _study(args)
    _, keys, _ = select_cells(study, args.all_cells)
    rec = recommend(study.study_dir, args.budget, member_sizes(study), params_col=args.params_col,
                    loss_col=args.loss_col, n_bootstrap=args.bootstrap, cell_keys=keys)
    if rec["not_in_study"] and not args.json:
        print(not_in_study_note(rec["not_in_study"]))
    print(json.dumps(rec, indent=1, default=str) if args.json else format_recommendation(rec))


def cmd_propose(args: argparse.Namespace) -> None:
    from sweeps.propose import format_proposal, propose_study

    rep = propose_study(_study(args), args.gpu_hours, target=args.target, at_flops=args.at_flops,
                        candidates=args.candidates, params_col=args.params_col, loss_col=args.loss_col,
                        n_bootstrap=args.bootstrap, seed=args.seed, write=args.write, figure=args.figure,
                        max_cells=args.max_cells)
    print(format_proposal(rep))


def cmd_tune(args: argparse.Namespace) -> int:
    from sweeps.tune import format_result, tune

    study = _study(args)
    if args.storage:
        study.tune.storage = args.storage
    try:
        print(format_result(tune(study, members=args.member, trials=args.trials, kind=args.executor,
                                 tokens=args.tokens, log=lambda line: print(line, flush=True))))
    except KeyboardInterrupt:
        print("interrupted: dispatched trials keep running; `tune` again continues the study", file=sys.stderr)
        return 130


def cmd_demo(args: argparse.Namespace) -> int:
    from demo.stages import DEFAULT_STUDY, run_demo

    try:
        run_demo(args.study or DEFAULT_STUDY, log=lambda line: print(line, flush=True))
    except KeyboardInterrupt:
        print("interrupted: finished stages and cells are kept; `launch.py demo` again continues", file=sys.stderr)
        return 130


ALL_CELLS_HELP = ("also the run dirs under the study dir that are not cells of this study file (other "
                  "versions of it trained into the same root); default: left out and named")


def build_parser() -> argparse.ArgumentParser:
    parser = _Parser(
        prog="slm-scaling",
        description="Scaling-law studies of interleaved speech-text language models.")
    sub = parser.add_subparsers(dest="command", required=True, metavar="COMMAND", parser_class=_Parser)
    root = argparse.ArgumentParser(add_help=False)   # the option every study command shares
    root.add_argument("--root", help="runs root directory (default: the study's `root`, else ./runs)")

    p = sub.add_parser("demo", help="the whole tool at micro scale on this CPU: data, TextLM family, study, report",
                       description="Generate stories, speak them with eSpeak into 25 Hz units, write the evaluation "
                                   "pairs, pretrain a micro TextLM family on text, train the study's interleaved "
                                   "SLMs (initialised from that family) and their textless twins on an IsoFLOP grid "
                                   "through the local executor (MLflow: SQLite in the study dir), and write the "
                                   "report that compares them. Every finished stage and cell is reused when run "
                                   "again. Ends with where the report is and the command that opens the MLflow UI.")
    p.add_argument("--study", help="study file (default examples/micro.yaml; its data goes to <stem>-data/ beside it)")
    p.set_defaults(func=cmd_demo)

    p = sub.add_parser("plan", parents=[root], help="print a study's cells: parameters, tokens, FLOPs, GPU-hours",
                       description="Validate a study file and print its grid of cells with exact parameter "
                                   "counts, token budgets, FLOPs and a GPU-hour estimate. Writes nothing.")
    p.add_argument("study", help="study file (YAML)")
    p.add_argument("--json", action="store_true", help="print a JSON list of cells instead of the table")
    p.set_defaults(func=cmd_plan)

    p = sub.add_parser("train", parents=[root], help="train one cell in this process",
                       description="Train one cell to its token budget in this process: a run directory "
                                   "(holding spec.json), or a study file with --cell KEY (its run directory is "
                                   "created). Resumes from the newest checkpoint. Exit code 0 when DONE, 3 when "
                                   "interrupted by SIGUSR2/SIGTERM after checkpointing (run it again to resume), "
                                   "4 when another live process trains the cell (it holds the run dir's lease; "
                                   "nothing is touched).")
    p.add_argument("target", help="run directory, or study file (with --cell)")
    p.add_argument("--cell", help="cell key (or a unique prefix) when TARGET is a study file")
    p.set_defaults(func=cmd_train)

    p = sub.add_parser("sync", parents=[root], help="mirror a study's run directories to MLflow",
                       description="Replay every run directory of the study into MLflow (params, metrics "
                                   "stepped by tokens, results, status), writing only what the tracking store "
                                   "lacks; for runs that trained while the server was unreachable.")
    p.add_argument("study", help="study file (YAML)")
    p.add_argument("--uri", help="tracking URI (default: the study's tracking.uri, else each run's own)")
    p.set_defaults(func=cmd_sync)

    p = sub.add_parser("fit", help="fit a scaling law (Approach 3 L(N, D), or Approach 2 IsoFLOP) to a CSV",
                       description="--approach 3 (default): fit the Chinchilla law L(N, D) = E + A/N^alpha + "
                                   "B/D^beta (log-sum-exp form, summed Huber loss, 4,500-start grid) to a CSV with "
                                   "columns params, tokens, loss and print JSON: E, A, B, alpha, beta, a, b, G, "
                                   "objective, n_points and bootstrap intervals. --approach 2: per compute budget "
                                   "(needs a flops column) a parabola in ln N and its vertex with a delta-method "
                                   "standard error, then N_opt = k C^a by weighted regression; prints a, k, b, "
                                   "intervals, budgets_used and budgets_refused. Per group with a group column.")
    p.add_argument("points", help="CSV file")
    p.add_argument("--params-col", default="params")
    p.add_argument("--tokens-col", default="tokens")
    p.add_argument("--loss-col", default="loss")
    p.add_argument("--group-col", "--group", dest="group_col", default="group",
                   help="column whose values are fitted separately when present (default group)")
    p.add_argument("--approach", type=int, choices=(2, 3), default=3,
                   help="3: L(N, D) (default); 2: IsoFLOP parabolas and the weighted vertex regression")
    p.add_argument("--flops-col", default="flops", help="budget column for --approach 2 (default flops)")
    p.add_argument("--window", type=float, help="--approach 2: fit each parabola on the runs within this factor "
                                                "in N of the budget's best run (e.g. 4)")
    p.add_argument("--bootstrap", type=int, default=200, help="bootstrap resamples (default 200)")
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--data-constrained", action="store_true",
                   help="fit R_D* and R_N* of Muennighoff et al.'s data-constrained law to a CSV with params, tokens, "
                        "unique_tokens, loss (base law on the single-epoch rows unless --base); prints JSON with "
                        "R_D_star, R_N_star, objective, intervals")
    p.add_argument("--base", metavar="E,A,B,alpha,beta", help="with --data-constrained: the base law, given")
    p.set_defaults(func=cmd_fit)

    p = sub.add_parser("submit", parents=[root], help="submit a study's cells (Slurm, local or debug), idempotently",
                       description="Create the run directories, snapshot the code, and submit every cell "
                                   "that is not DONE and has no live job (FAILED cells up to "
                                   "executor.max_retries), as job arrays chunked to the cluster's maximum array "
                                   "size. Interrupted cells resume from their checkpoints.")
    p.add_argument("study", help="study file (YAML)")
    p.add_argument("--executor", choices=["slurm", "local", "debug"], help="override executor.kind")
    p.add_argument("--dry-run", action="store_true", help="print what would be submitted; write nothing")
    p.add_argument("--no-wait", action="store_true",
                   help="fail at once (naming the holder) when another submit, tune or demo holds the study's lock")
    p.add_argument("--tracking-uri", help="override tracking.uri (e.g. the study's tracking server)")
    p.set_defaults(func=cmd_submit)

    p = sub.add_parser("status", parents=[root], help="per-cell state, progress, loss, speed and ETA",
                       description="A table per cell from the run directories (state, attempts, job id, tokens "
                                   "done / budget, last loss, tokens/s, ETA) checked against the scheduler with "
                                   "one query, and counts per state.")
    p.add_argument("study", help="study file (YAML)")
    p.add_argument("--all-cells", action="store_true", help=ALL_CELLS_HELP)
    p.set_defaults(func=cmd_status)

    p = sub.add_parser("cancel", parents=[root], help="cancel the live jobs of a study (or of some cells)",
                       description="Cancel the queued or running jobs of the study's cells; a cancelled cell "
                                   "checkpoints (SIGTERM) and a later submit resumes it.")
    p.add_argument("study", help="study file (YAML)")
    p.add_argument("--cells", nargs="+", help="cell keys or key prefixes (default: every cell)")
    p.set_defaults(func=cmd_cancel)

    p = sub.add_parser("tracking-server", parents=[root], help="run an MLflow server for the study (for cluster jobs)",
                       description="Start `mlflow server` on a private PostgreSQL in <study dir>/postgres "
                                   "(scripts/postgres/start.sh; --backend-store-uri for any database, --sqlite "
                                   "for one machine), bound to 127.0.0.1 unless --host says otherwise; point "
                                   "tracking.uri (or submit --tracking-uri) at it so jobs log over HTTP.")
    p.add_argument("study", help="study file (YAML)")
    p.add_argument("--host", default="127.0.0.1")
    p.add_argument("--port", type=int, default=5000)
    p.add_argument("--workers", type=int, default=4, help="server worker processes (default 4; 1 with --sqlite)")
    p.add_argument("--backend-store-uri", help="any MLflow database URL (postgresql://, mysql+pymysql://, ...) "
                                               "instead of the project's PostgreSQL")
    p.add_argument("--sqlite", action="store_true", help="the embedded single-file SQLite store in the study "
                                                         "dir (one machine only)")
    p.add_argument("--postgres-dir", help="data folder of the project's PostgreSQL (default <study dir>/postgres; "
                                          "user postgres must reach it)")
    p.add_argument("--postgres-port", type=int, default=5433, help="its port on 127.0.0.1 (default 5433)")
    p.set_defaults(func=cmd_tracking_server)

    p = sub.add_parser("ui", parents=[root], help="open the study's MLflow experiment in the MLflow UI",
                       description="Start `mlflow ui` on the study's tracking store (the SQLite file in the study "
                                   "directory, or tracking.uri), bound to 127.0.0.1 unless --host says otherwise, "
                                   "print the experiment's URL, open a browser, and wait (Ctrl-C stops it). When "
                                   "tracking.uri is a server, print its experiment URL only.")
    p.add_argument("study", help="study file (YAML)")
    p.add_argument("--host", default="127.0.0.1")
    p.add_argument("--port", type=int, default=5000)
    p.add_argument("--no-browser", action="store_true", help="do not open a browser")
    p.add_argument("--print-command", action="store_true", help="print the `mlflow ui` command and exit")
    p.add_argument("--tracking-uri", help="override tracking.uri")
    p.set_defaults(func=cmd_ui)

    p = sub.add_parser("tune", parents=[root], help="tune lr, warmup and batch size of small members with optuna",
                       description="An optuna search (study `tune:` section: space, trials_per_batch, seed, "
                                   "budget) per member: trials are cells at the tuning budget, asked in batches "
                                   "and dispatched through the executors (local, Slurm, debug), pruned on "
                                   "intermediate validation loss when eval.every_tokens is set, each an MLflow "
                                   "run under a `tune-<member>` parent run (with optuna's plots). Storage: "
                                   "sqlite:///<study dir>/optuna.db (or tune.storage / --storage); running it "
                                   "again continues the same optuna study. Then fits lr_opt(N) = a N^b over the "
                                   "tuned members into <study dir>/tuned.json, used by `lr: tuned`.")
    p.add_argument("study", help="study file (YAML)")
    p.add_argument("--member", action="append", help="member to tune (name or family/member; repeat for "
                                                     "several; default tune.members)")
    p.add_argument("--trials", type=int, help="finished trials per member to reach (default tune.trials)")
    p.add_argument("--tokens", type=float, help="token budget per trial (default tune.tokens, else the "
                                                "member's smallest budget in the grid)")
    p.add_argument("--executor", choices=["slurm", "local", "debug"], help="override executor.kind")
    p.add_argument("--storage", help="optuna storage URL (default tune.storage, else the study dir's optuna.db)")
    p.add_argument("--tracking-uri", help="override tracking.uri (e.g. the study's tracking server)")
    p.set_defaults(func=cmd_tune)

    p = sub.add_parser("propose", parents=[root], help="the next cells that shrink the interval on a (or a loss) most per GPU-hour",
                       description="Fit L(N, D) (Approach 3 with bootstrap) to each group's finished cells, score "
                                   "every candidate cell (each member at --candidates tokens-per-parameter values "
                                   "within the study's limits, not yet planned, costed by the study's cost model) "
                                   "by the expected shrinkage of the target's 95%% interval per GPU-hour (Fisher "
                                   "information averaged over the bootstrap fits, delta method), choose greedily "
                                   "within --gpu-hours, print the table and draw the cells (PNG). With --write the "
                                   "cells go to <study dir>/proposed.yaml, which plan and submit read.")
    p.add_argument("study", help="study file (YAML)")
    p.add_argument("--gpu-hours", type=float, required=True, help="GPU-hours to spend on the proposed cells")
    p.add_argument("--target", choices=["a", "loss"], default="a",
                   help="a: the allocation exponent (default); loss: the compute-optimal loss at --at-flops")
    p.add_argument("--at-flops", type=float, help="--target loss: FLOPs (default 10x the largest finished budget)")
    p.add_argument("--candidates", type=int, default=9,
                   help="tokens-per-parameter values per member, log-spaced within the study's limits (default 9)")
    p.add_argument("--max-cells", type=int, help="at most this many cells (each cell has overheads the "
                                                 "GPU-hour estimate does not count)")
    p.add_argument("--write", action="store_true", help="add the proposed cells to <study dir>/proposed.yaml")
    p.add_argument("--figure", help="PNG of the proposal (default <study dir>/propose.png)")
    p.add_argument("--params-col", default="params_total", choices=["params_total", "params_nonembedding"],
                   help="parameter-count convention for N (default params_total)")
    p.add_argument("--loss-col", default="val_loss_speech", help="loss to fit (default val_loss_speech)")
    p.add_argument("--bootstrap", type=int, default=200, help="bootstrap resamples (default 200)")
    p.add_argument("--seed", type=int, default=0)
    p.set_defaults(func=cmd_propose)

    for name in ("report", "recommend"):
        if name == "report":
            p = sub.add_parser("report", parents=[root], help="fit scaling laws to a study's finished runs and write a report",
                               description="Harvest the study's DONE run directories, fit L(N, D) (Approach 3 "
                                           "with bootstrap intervals), IsoFLOP parabolas (Approach 2), the "
                                           "loss-compute frontier and downstream metrics against compute per group "
                                           "(family, setup, variant), check extrapolation without the largest "
                                           "budget, and write report.md, report.html, fits.json and PNG figures; "
                                           "also logged to the study's MLflow experiment as a report run.")
            p.add_argument("--out", help="report folder (default <study dir>/report)")
            p.add_argument("--no-mlflow", action="store_true", help="do not log the report to MLflow")
            p.set_defaults(func=cmd_report)
        else:
            p = sub.add_parser("recommend", parents=[root], help="compute-optimal model size and tokens for a FLOP budget",
                               description="Fit L(N, D) to the study's finished runs and print, for --budget FLOPs, "
                                           "N_opt, D_opt, tokens per parameter and the predicted loss with "
                                           "bootstrap intervals, and the nearest member of each family with the "
                                           "tokens it should get.")
            p.add_argument("--budget", type=float, required=True, help="compute budget in FLOPs, e.g. 1e21")
            p.add_argument("--json", action="store_true", help="print JSON")
            p.set_defaults(func=cmd_recommend)
        p.add_argument("study", help="study file (YAML)")
        p.add_argument("--params-col", default="params_total", choices=["params_total", "params_nonembedding"],
                       help="parameter-count convention for N (default params_total)")
        p.add_argument("--loss-col", default="val_loss_speech", help="loss to fit (default val_loss_speech)")
        p.add_argument("--bootstrap", type=int, default=200, help="bootstrap resamples (default 200)")
        p.add_argument("--all-cells", action="store_true", help=ALL_CELLS_HELP)
    return parser


def main(argv: list[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    try:
        code = args.func(args)
    except InputError as e:
        print(f"error: {e}", file=sys.stderr)
        return 2
    except BrokenPipeError:
        return 0
    return code or 0


if __name__ == "__main__":
    sys.exit(main())
