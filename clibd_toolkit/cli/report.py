"""``clibd report``: one notebook run headless with parameters, exported as an offline HTML report (:mod:`clibd_toolkit.report`)."""
from __future__ import annotations

import argparse
import json
import sys
from typing import Any

from ..report import DEFAULT_KERNEL, run_and_export
from ._common import add_overwrite_argument


def _parse_value(text: str) -> Any:
    """papermill's ``-p`` typing: True/False/None, int, float, else the string."""
    if text in ("True", "False"):
        return text == "True"
    if text == "None":
        return None
    for cast in (int, float):
        try:
            return cast(text)
        except ValueError:
            pass
    return text


#: what ``clibd report`` writes in its --out folder (a folder holding only these is its own earlier output)
REPORT_ENTRIES: tuple[str, ...] = ("notebooks", "reports")


def add_report_arguments(parser: argparse.ArgumentParser) -> None:
    """Options of ``clibd report``."""
    parser.add_argument("notebook", help="notebook to run, e.g. notebooks/03_evaluate.ipynb")
    parser.add_argument("--out", required=True, metavar="DIR",
                        help="folder for notebooks/NAME.ipynb (executed) and reports/NAME.html")
    parser.add_argument("-p", "--parameter", nargs=2, action="append", default=[], metavar=("NAME", "VALUE"),
                        help="notebook parameter (typed like papermill -p: True/False/None, int, float, else text)")
    parser.add_argument("-r", "--raw-parameter", nargs=2, action="append", default=[], metavar=("NAME", "VALUE"),
                        help="notebook parameter kept as text")
    parser.add_argument("--name", default=None, help="file name stem of the outputs (default: the notebook's)")
    parser.add_argument("--kernel", default=DEFAULT_KERNEL, help=f"Jupyter kernel (default {DEFAULT_KERNEL})")
    parser.add_argument("--cell-timeout", type=int, default=None, help="seconds allowed per cell (default: none)")
    parser.add_argument("--hide-input", action="store_true", help="leave the code out of the HTML report")
    add_overwrite_argument(parser, "notebooks/ and reports/")


def run_report(args: argparse.Namespace) -> int:
    """``clibd report``: execute one notebook headless and export its offline HTML report."""
    from ..io import refuse_foreign_folder

    refuse_foreign_folder(args.out, overwrite=args.overwrite, what="report folder", own=REPORT_ENTRIES)
    params = {name: _parse_value(value) for name, value in args.parameter}
    params.update({name: value for name, value in args.raw_parameter})
    result = run_and_export(args.notebook, args.out, params, name=args.name, kernel_name=args.kernel,
                            execution_timeout=args.cell_timeout, hide_input=args.hide_input)
    sys.stdout.write(json.dumps({"notebook": str(result["notebook"]), "html": str(result["html"]),
                                 "seconds": round(result["seconds"], 1)}) + "\n")
    return 0
