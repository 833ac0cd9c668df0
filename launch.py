"""slm-scaling command line: parse, call one package function, print. No logic lives here."""
from __future__ import annotations

import argparse
import json
import sys


def cmd_plan(args: argparse.Namespace) -> None:
    from sweeps.plan import cell_rows, format_plan, make_plan
    from sweeps.study import load_study

    plan = make_plan(load_study(args.study, root=args.root))
    if args.json:
        print(json.dumps(cell_rows(plan), indent=1))
    else:
        print(format_plan(plan))


class _Parser(argparse.ArgumentParser):
    """Bad flags are one line naming the command and the problem, exit code 2."""

    def error(self, message: str) -> None:  # type: ignore[override]
        self.exit(2, f"error: {self.prog}: {message} (see {self.prog} --help)\n")


def build_parser() -> argparse.ArgumentParser:
    parser = _Parser(
        prog="slm-scaling",
        description="Scaling-law studies of interleaved speech-text language models.")
    sub = parser.add_subparsers(dest="command", required=True, metavar="COMMAND", parser_class=_Parser)

    p = sub.add_parser("plan", help="print a study's cells: parameters, tokens, FLOPs, GPU-hours",
                       description="Validate a study file and print its grid of cells with exact parameter "
                                   "counts, token budgets, FLOPs and a GPU-hour estimate. Writes nothing.")
    p.add_argument("study", help="study file (YAML)")
    p.add_argument("--json", action="store_true", help="print a JSON list of cells instead of the table")
    p.add_argument("--root", help="runs root directory (default: the study's `root`, else ./runs)")
    p.set_defaults(func=cmd_plan)
    return parser


def main(argv: list[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    from scaling.errors import InputError

    user_errors: tuple[type[BaseException], ...] = (InputError,)
    try:
        from analysis.errors import InputError as AnalysisInputError
        user_errors += (AnalysisInputError,)
    except ImportError:
        pass
    try:
        args.func(args)
    except user_errors as e:
        print(f"error: {e}", file=sys.stderr)
        return 2
    except BrokenPipeError:
        return 0
    return 0


if __name__ == "__main__":
    sys.exit(main())
