"""Photograph a study in the MLflow UI for the README (docs/mlflow-ui.png).

    .venv/bin/python scripts/screenshot_ui.py [--study examples/tiny.yaml] [--root DIR] [--out docs/mlflow-ui.png]

Trains the study with `launch.py submit STUDY --executor debug` and writes its report (`launch.py
report`) into a temporary runs root (or --root; both commands reuse finished work), starts `mlflow ui`
on the study's store as `launch.py ui` does (sweeps.ui), and takes a screenshot of the experiment's
runs page (the study's dashboard view) with headless Chromium, Debian's `chromium` package
(`apt-get install -y chromium`). Chromium's local storage for the page's origin is seeded first, from a
throw-away page served on the same port, so the UI opens without its first-visit assistant panel and
tips. The PNG is reduced to a 256-colour palette when it is over --max-kb.
"""
from __future__ import annotations

import argparse
import http.server
import os
import shutil
import socket
import subprocess
import sys
import tempfile
import threading
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

CHROMIUM_FLAGS = ["--headless", "--no-sandbox", "--disable-gpu", "--disable-quic", "--no-first-run",
                  "--disable-background-networking", "--disable-component-update", "--disable-sync",
                  "--hide-scrollbars"]
# localStorage of the MLflow 3 UI (`<key>_v<version>` JSON values; see its useLocalStorage hook)
SEED = {"mlflow.assistant.fab.autoOpenedOnFirstLoad_v1": "true", "mlflow.assistant.panelOpen_v1": "false",
        "mlflow.workflowType_v1": '"machine_learning"', "mlflow.detectIssues.guidanceDismissed": "true",
        "mlflow.telemetry.info.alert.dismissed": "true"}


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


def seed_storage(binary: str, profile: Path, port: int, size: str) -> None:
    """Set the UI's local storage for http://127.0.0.1:<port> from a page served there for a moment."""
    script = "".join(f"localStorage.setItem({k!r}, {v!r});" for k, v in SEED.items())
    page = f"<html><body><script>{script}document.body.innerText='seeded';</script></body></html>".encode()

    class Page(http.server.BaseHTTPRequestHandler):
        def do_GET(self):  # noqa: N802
            self.send_response(200)
            self.send_header("Content-Type", "text/html")
            self.send_header("Content-Length", str(len(page)))
            self.end_headers()
            self.wfile.write(page)

        def log_message(self, *a):
            pass

    server = http.server.ThreadingHTTPServer(("127.0.0.1", port), Page)
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    try:
        out = chromium(binary, profile, size, "--virtual-time-budget=2000", "--dump-dom", f"http://127.0.0.1:{port}/")
        if "seeded" not in out.stdout:
            sys.exit(f"error: chromium did not run the seeding page:\n{out.stderr[-2000:]}")
    finally:
        server.shutdown()
        server.server_close()


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
    from sweeps.ui import _wait_healthy, experiment_name, experiment_url, lookup_experiment, start_ui, stop_ui

    binary = chromium_path(args.chromium)
    work = Path(tempfile.mkdtemp(prefix="slm-ui-shot-"))
    root = Path(args.root) if args.root else work / "runs"
    try:
        if not args.no_train:
            launch("submit", args.study, "--executor", "debug", "--root", str(root))
            launch("report", args.study, "--root", str(root))
        study = load_study(args.study, root=str(root))
        port = free_port()
        profile = work / "chromium"
        seed_storage(binary, profile, port, args.size)
        proc = start_ui(study, "127.0.0.1", port, work / "mlflow-ui.log")
        try:
            base = f"http://127.0.0.1:{port}"
            _wait_healthy(base, proc, work / "mlflow-ui.log")
            exp = lookup_experiment(base, experiment_name(study))
            if exp is None:
                sys.exit(f"error: no experiment {experiment_name(study)!r} in the study's store")
            url = experiment_url(base, exp)
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
