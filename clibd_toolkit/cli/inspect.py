"""``clibd inspect``: counts, summaries and a record-by-record problem report (:mod:`clibd_toolkit.inspection`)."""
from __future__ import annotations

import argparse
import json
from pathlib import Path
from typing import Any

from ..errors import DataError
from ..inspection import inspect_records


def add_inspect_arguments(parser: argparse.ArgumentParser) -> None:
    """Options of ``clibd inspect``."""
    parser.add_argument("--data", required=True, metavar="DATA",
                        help="BOLD TSV, CSV/TSV/Parquet, FASTA, CLIBD HDF5, BIOSCAN folder or simulator folder")
    parser.add_argument("--format", default="auto", help="data format (default: detect from the path)")
    parser.add_argument("--image-root", default=None, help="folder that relative image paths are resolved against")
    parser.add_argument("--images", choices=["header", "decode", "none"], default="header",
                        help="image check: open every header and decode a sample (default), decode all, or skip")
    parser.add_argument("--decode-sample", type=int, default=100, help="images fully decoded in header mode")
    parser.add_argument("--max-image-checks", type=int, default=None,
                        help="check at most this many images (a seeded random sample; default: all)")
    parser.add_argument("--json", default=None, metavar="OUT", help="also write the full report as JSON")
    parser.add_argument("--problems", default=None, metavar="CSV", help="also write every problem as CSV")
    parser.add_argument("--max-listed", type=int, default=50, help="problems listed in the text report")
    parser.add_argument("--strict", action="store_true", help="exit with status 1 when any problem is found")


def run_inspect(args: argparse.Namespace) -> int:
    """Run ``clibd inspect``: print the text report; write JSON / CSV when asked.

    Returns:
        0 when the report was produced (1 with ``--strict`` and problems found). Unreadable sources raise a
        :class:`~clibd_toolkit.errors.ClibdError`, which the CLI turns into one line and a non-zero exit.
    """
    from ..io import atomic_path, atomic_write_text
    from ..readers import detect_format, reader_options

    options: dict[str, Any] = {}
    if getattr(args, "image_root", None):
        fmt = args.format if args.format != "auto" else detect_format(Path(args.data))
        if "image_root" not in reader_options(fmt):
            raise DataError(f"--image-root does not apply to format {fmt!r}")
        options["image_root"] = args.image_root
    report = inspect_records(args.data, format=args.format, images=args.images, decode_sample=args.decode_sample,
                             max_image_checks=args.max_image_checks, **options)
    print(report.to_text(max_listed=args.max_listed))  # noqa: T201 - the CLI's output
    if args.json:
        atomic_write_text(args.json, json.dumps(report.to_dict(), indent=2, ensure_ascii=False, default=str) + "\n")
    if args.problems:
        with atomic_path(args.problems) as tmp:
            report.problems.to_csv(tmp, index=False)
    return 1 if (args.strict and not report.ok) else 0
