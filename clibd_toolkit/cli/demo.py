"""``clibd demo``: the main job, the notebooks run headless into one report folder (:mod:`clibd_toolkit.demo`)."""
from __future__ import annotations

import argparse
import json
import sys
import time
from pathlib import Path

from ..demo import (
    DEMO_ENTRIES,
    DEMO_NOTEBOOKS,
    demo_plan,
    notebook_dir,
    summarise,
    write_index,
)
from ._common import add_overwrite_argument


def add_demo_arguments(parser: argparse.ArgumentParser) -> None:
    """Options of ``clibd demo``."""
    parser.add_argument("--out", default="clibd-output", metavar="DIR",
                        help="output folder for notebooks, reports and metrics (default: clibd-output)")
    parser.add_argument("--smoke", action="store_true",
                        help="tiny survey and tiny model: checks the whole chain in about a minute")
    parser.add_argument("--records", type=int, default=None, help="simulated records (default: the quickstart's)")
    parser.add_argument("--epochs", type=int, default=None, help="training epochs (default: the quickstart's)")
    parser.add_argument("--preset", default=None, help="model preset (default: the quickstart's, cpu)")
    parser.add_argument("--seed", type=int, default=0, help="seed of the survey, split and training")
    parser.add_argument("--device", default="auto", help="auto (default), cpu, cuda, cuda:N, mps")
    parser.add_argument("--kernel", default="python3", help="Jupyter kernel that runs the notebooks")
    parser.add_argument("--cell-timeout", type=int, default=None, help="seconds allowed per notebook cell")
    add_overwrite_argument(parser, "a demo's files")
    parser.add_argument("--only", default=None,
                        help=f"comma-separated subset of the notebooks to run (default: all of {list(DEMO_NOTEBOOKS)})")


def run_demo(args: argparse.Namespace) -> int:
    """``clibd demo``: run the main job and print where the report is (exit status 1 if a notebook failed)."""
    from ..errors import ClibdError, ConfigError
    from ..report import run_and_export

    out = Path(args.out).expanduser().resolve()
    from ..io import refuse_foreign_folder

    refuse_foreign_folder(out, overwrite=args.overwrite, what="demo folder", option="--out", own=DEMO_ENTRIES)
    out.mkdir(parents=True, exist_ok=True)
    nb_dir = notebook_dir()
    plan = demo_plan(out, smoke=args.smoke, records=args.records, epochs=args.epochs, seed=args.seed,
                     device=args.device, preset=args.preset)
    if args.only:
        wanted = [n.strip() for n in args.only.split(",") if n.strip()]
        unknown = [n for n in wanted if n not in DEMO_NOTEBOOKS]
        if unknown:
            raise ConfigError(f"--only: unknown notebook(s) {unknown}; choose from {list(DEMO_NOTEBOOKS)}")
        plan = [(n, p) for n, p in plan if n in wanted]
    start = time.perf_counter()
    results, failures = [], []
    for i, (name, params) in enumerate(plan, start=1):
        sys.stderr.write(f"[{i}/{len(plan)}] {name} ...\n")
        sys.stderr.flush()
        t0 = time.perf_counter()
        try:
            result = run_and_export(nb_dir / f"{name}.ipynb", out, params, name=name, kernel_name=args.kernel,
                                    cwd=out, execution_timeout=args.cell_timeout)
        except ClibdError as exc:
            failures.append(name)
            sys.stderr.write(f"[{i}/{len(plan)}] {name} FAILED: {exc}\n")
            result = {"name": name, "notebook": out / "notebooks" / f"{name}.ipynb",
                      "html": out / "reports" / f"{name}.html", "seconds": time.perf_counter() - t0, "failed": True}
            if name == "01_quickstart":  # everything else reads its outputs
                results.append(result)
                break
        else:
            sys.stderr.write(f"[{i}/{len(plan)}] {name} done in {result['seconds']:.0f} s\n")
        results.append(result)
    seconds = time.perf_counter() - start
    summary = summarise(out)
    summary.update({"seconds": round(seconds, 1), "failed": failures,
                    "notebooks": [{"name": r["name"], "seconds": round(r["seconds"], 1),
                                   "html": str(Path(r["html"]).relative_to(out)),
                                   "notebook": str(Path(r["notebook"]).relative_to(out)),
                                   "failed": bool(r.get("failed"))} for r in results]})
    from ..io import atomic_write_text

    atomic_write_text(out / "summary.json", json.dumps(summary, indent=1, default=str) + "\n")
    index = write_index(out, results, summary, failures, seconds)
    headline = summary.get("learning", {}).get("headline")
    lines = [f"clibd demo: {len(results) - len(failures)} of {len(plan)} notebooks ran in {seconds:.0f} s",
             *( [headline] if headline else []),
             f"report:    {index}",
             f"HTML:      {out / 'reports'}",
             f"notebooks: {out / 'notebooks'}",
             f"metrics:   {out / '01_quickstart' / 'metrics.json'}"]
    if failures:
        lines.append(f"FAILED: {', '.join(failures)} (see the executed notebooks for the failing cell)")
    sys.stdout.write("\n".join(lines) + "\n")
    return 1 if failures else 0
