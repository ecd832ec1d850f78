"""What the data- and model-reading commands share: the --data and --run/--model options, and reading them."""
from __future__ import annotations

import argparse
import sys
from pathlib import Path
from typing import Sequence


def add_data_arguments(parser: argparse.ArgumentParser, *, required: bool = True) -> None:
    """Add the options every data-reading command shares: ``--data``, ``--format``, ``--image-root``, ``--on-error``."""
    group = parser.add_argument_group("data")
    group.add_argument("--data", required=required, metavar="DATA",
                       help="records: BOLD TSV, CSV/TSV/Parquet, FASTA, CLIBD HDF5, BIOSCAN folder or simulator folder")
    group.add_argument("--format", default="auto", help="data format (default: detect from the path)")
    group.add_argument("--image-root", default=None, help="folder that relative image paths are resolved against")
    group.add_argument("--on-error", choices=["raise", "skip"], default="raise",
                       help="bad records: stop with an error (default) or skip them, listing each in a rejects file")


def load_data(args: argparse.Namespace, rejects_path: Path | None = None):
    """Read ``--data`` with the shared options and write every bad record, with its reason, to a rejects CSV.

    The whole file is always read, so that every problem is found in one pass: under ``--on-error skip`` the bad
    records are left out (and counted); under ``--on-error raise`` (default) one DataError lists them all (the first
    ten in the message, every one in the rejects file) and nothing runs.
    """
    from ..errors import DataError
    from ..readers import detect_format, read_records, reader_options

    options = {}
    if getattr(args, "image_root", None):
        fmt = detect_format(Path(args.data)) if args.format == "auto" else args.format
        if "image_root" not in reader_options(fmt):
            raise DataError(f"--image-root does not apply to {fmt} data (its images are not files beside a table)")
        options["image_root"] = args.image_root
    result = read_records(args.data, format=args.format, on_error="skip", **options)
    if len(result.rejects):
        path = rejects_path or Path(str(args.data).rstrip("/") + ".rejects.csv")
        result.rejects.save(path)
        if args.on_error == "raise":
            rows = result.rejects.rows
            listed = "; ".join(f"{r['record_id'] or 'row ' + str(r['row'])}: {r['reason']}" for r in rows[:10])
            more = f" (and {len(rows) - 10} more)" if len(rows) > 10 else ""
            raise DataError(f"{len(rows)} of {result.n_read} records in {args.data} cannot be used: {listed}{more}. "
                            f"All are listed in {path}; fix them, or pass --on-error skip to leave them out",
                            record_id=rows[0]["record_id"])
        _info(f"{result.summary()}; rejects listed in {path}")
    return result.records


def _info(message: str) -> None:
    sys.stderr.write(message + "\n")


def add_model_arguments(parser: argparse.ArgumentParser, *, required: bool = True,
                        run_flags: Sequence[str] = ("--run",), run_help: str = "") -> None:
    """Add the model options of every command that embeds: ``--run RUN`` (a training run) or ``--model NAME|PATH``
    (a released CLIBD model, see ``clibd models``), and ``--checkpoint`` (with ``--run``)."""
    group = parser.add_argument_group("model (--run or --model)")
    choice = group.add_mutually_exclusive_group(required=required)
    choice.add_argument(*run_flags, dest="run", default=None, metavar="RUN",
                        help="training run folder (clibd train --out)" + (f"; {run_help}" if run_help else ""))
    choice.add_argument("--model", default=None, metavar="NAME|PATH",
                        help="a released CLIBD model instead of a run: a name from `clibd models` (downloaded once "
                             "from the Hugging Face hub, then cached), a released best.pth, or a folder holding one")
    group.add_argument("--checkpoint", default="best", help="with --run: best (default), last, or epoch-NNNN")


def load_model(args: argparse.Namespace, device: str = "cpu"):
    """The model that ``--run``/``--checkpoint`` or ``--model`` name (see :func:`add_model_arguments`)."""
    from ..errors import ConfigError

    if getattr(args, "model", None):
        if getattr(args, "checkpoint", "best") != "best":
            raise ConfigError("--checkpoint selects a checkpoint of a --run; a released --model is one file")
        from ..pretrained import load_pretrained

        return load_pretrained(args.model, device=device)
    if not getattr(args, "run", None):
        raise ConfigError("name the model: --run RUN (a training run) or --model NAME|PATH (a released CLIBD model; "
                          "`clibd models` lists them)")
    from ..checkpoint import load_run

    return load_run(args.run, args.checkpoint, device=device)


def model_provenance(args: argparse.Namespace) -> dict:
    """What ``--run``/``--model`` named, for the config of every output (``pretrained``: the ``--model`` value)."""
    if getattr(args, "model", None):
        return {"pretrained": str(args.model)}
    return {"run": str(args.run), "checkpoint": args.checkpoint}


def add_overwrite_argument(parser: argparse.ArgumentParser, own: str) -> None:
    """``--overwrite`` of a command that writes a folder: without it a non-empty ``--out`` folder holding more than
    ``own`` (what the command itself writes there) is refused (:func:`clibd_toolkit.io.refuse_foreign_folder`)."""
    parser.add_argument("--overwrite", action="store_true",
                        help=f"write into an existing non-empty --out folder that holds more than {own} (files of "
                             "the same names are replaced); without it such a folder is refused")

