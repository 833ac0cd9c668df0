"""Photograph a study in the MLflow UI for the README (docs/mlflow-ui.png).

    .venv/bin/python scripts/screenshot_ui.py [--study examples/tiny.yaml] [--root DIR] [--out docs/mlflow-ui.png]

Trains the study with `launch.py submit STUDY --executor debug` and writes its report (`launch.py
report`) into a temporary runs root (or --root; both commands reuse finished work), starts `mlflow ui`
on the study's store as `launch.py ui` does (sweeps.ui), and photographs what a new browser profile
shows when `launch.py ui` opens it, with headless Chromium, Debian's `chromium` package
(`apt-get install -y chromium`): a fresh profile first loads `ui`'s landing page (sweeps.ui.landing_page,
served on the UI's port before `mlflow ui` starts), then the runs page it leads to, which the screenshot
shows. The PNG is reduced to a 256-colour palette when it is over --max-kb.
"""
from __future__ import annotations

import argparse
import os
import shutil
import socket
import subprocess
import sys
import tempfile
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

CHROMIUM_FLAGS = ["--headless", "--no-sandbox", "--disable-gpu", "--disable-quic", "--no-first-run",
                  "--disable-background-networking", "--disable-component-update", "--disable-sync",
                  "--hide-scrollbars"]
def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def chromium_path(given: str | None) -> str:
    path = given or shutil.which("chromium") or shutil.which("chromium-browser")
    if not path:
        sys.exit("error: no chromium here; install Debian's package: apt-get install -y chromium")
    return path


def chromium(binary: str, profile: Path, size: str, *args: str, timeout: float = 180) -> subprocess.CompletedProcess:
    cmd = [binary, *CHROMIUM_FLAGS, f"--user-data-dir={profile}", f"--window-size={size.replace('x', ',')}", *args]
    return subprocess.run(cmd, capture_output=True, text=True, timeout=timeout)


def land(binary: str, profile: Path, port: int, size: str, page: bytes) -> None:
    """Open `ui`'s landing page in the fresh profile, served on the UI's port as `launch.py ui` serves it."""
    from sweeps.ui import serve_landing

    def open_page(url: str) -> None:
        out = chromium(binary, profile, size, "--virtual-time-budget=2000", "--dump-dom", url)
        if "starting the MLflow UI" not in out.stdout:
            sys.exit(f"error: chromium did not load the landing page:\n{out.stderr[-2000:]}")

    if not serve_landing("127.0.0.1", port, page, open_page, wait_s=1.0):
        sys.exit("error: the landing page did not run in chromium")


def launch(*args: str) -> None:
    env = {**os.environ, "MLFLOW_SUPPRESS_PRINTING_URL_TO_STDOUT": "true", "MLFLOW_DISABLE_TELEMETRY": "true"}
    res = subprocess.run([sys.executable, str(ROOT / "launch.py"), *args], capture_output=True, text=True, env=env)
    if res.returncode != 0:
        sys.exit(f"error: launch.py {' '.join(args)} failed:\n{(res.stdout + res.stderr)[-3000:]}")
    print(res.stdout.strip().splitlines()[-1] if res.stdout.strip() else f"launch.py {args[0]}: done", flush=True)


def shrink(src: Path, dst: Path, max_kb: int) -> None:
    if src.stat().st_size <= max_kb * 1024:
        shutil.copyfile(src, dst)
        return
    from PIL import Image

    with Image.open(src) as img:
        img.convert("RGB").quantize(colors=256).save(dst, optimize=True)


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--study", default=str(ROOT / "examples" / "tiny.yaml"))
    ap.add_argument("--root", help="runs root (default: a temporary folder, removed afterwards)")
    ap.add_argument("--no-train", action="store_true", help="use the runs already under --root")
    ap.add_argument("--out", default=str(ROOT / "docs" / "mlflow-ui.png"))
    ap.add_argument("--size", default="1680x900", help="window size WxH")
    ap.add_argument("--wait-ms", type=int, default=15000, help="Chromium's virtual time budget for the page")
    ap.add_argument("--max-kb", type=int, default=250)
    ap.add_argument("--chromium", help="the browser binary (default: chromium on PATH)")
    args = ap.parse_args(argv)

    from sweeps.study import load_study
    from sweeps.ui import (_wait_healthy, experiment_name, first_visit_storage, landing_page, runs_url, start_ui,
                           stop_ui, store_experiment, store_uri)

    binary = chromium_path(args.chromium)
    work = Path(tempfile.mkdtemp(prefix="slm-ui-shot-"))
    root = Path(args.root) if args.root else work / "runs"
    try:
        if not args.no_train:
            launch("submit", args.study, "--executor", "debug", "--root", str(root))
            launch("report", args.study, "--root", str(root))
        study = load_study(args.study, root=str(root))
        port = free_port()
        profile = work / "chromium"   # a new browser profile
        exp = store_experiment(store_uri(study), experiment_name(study))
        if exp is None:
            sys.exit(f"error: no experiment {experiment_name(study)!r} in the study's store")
        page = landing_page(f"slm-scaling study {study.name}", first_visit_storage(exp),
                            runs_url("", exp["experiment_id"]))
        land(binary, profile, port, args.size, page)
        proc = start_ui(study, "127.0.0.1", port, work / "mlflow-ui.log")
        try:
            base = f"http://127.0.0.1:{port}"
            _wait_healthy(base, proc, work / "mlflow-ui.log")
            url = runs_url(base, exp["experiment_id"])   # where the landing page goes once the UI answers
            shot = work / "shot.png"
            res = chromium(binary, profile, args.size, f"--virtual-time-budget={args.wait_ms}",
                           f"--screenshot={shot}", url)
            if not shot.is_file():
                sys.exit(f"error: chromium wrote no screenshot:\n{res.stderr[-2000:]}")
        finally:
            stop_ui(proc)
        out = Path(args.out)
        out.parent.mkdir(parents=True, exist_ok=True)
        shrink(shot, out, args.max_kb)
        print(f"{out}: {out.stat().st_size // 1024} KB, {url}")
    finally:
        shutil.rmtree(work, ignore_errors=True)
    return 0


if __name__ == "__main__":
    sys.exit(main())
