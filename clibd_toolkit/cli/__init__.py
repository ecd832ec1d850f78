"""The ``clibd`` command line: a thin shell over the library, and the only place argparse lives.

Every subcommand documents its options in ``--help``. Bad input ends with one line on stderr
(``clibd: error: ...``) and exit status 2; no traceback. Subcommands are registered in :data:`COMMANDS` as
``name -> (module, help)``; each is one module of this package (``clibd_toolkit/cli/<name>.py``) providing
``add_<name>_arguments(parser)`` and ``run_<name>(args) -> int``, which calls the library. Options several commands
share (``--data``, ``--run``/``--model``) are in :mod:`clibd_toolkit.cli._common`. The library never imports this
package. To add a command: write ``cli/<name>.py`` with those two functions and add a line to :data:`COMMANDS`.
"""
from __future__ import annotations

import argparse
import importlib
import logging
import sys
from typing import Sequence

# subcommand -> (module of this package defining add_<cmd>_arguments / run_<cmd>, one-line help)
COMMANDS: dict[str, tuple[str, str]] = {
    "presets": ("clibd_toolkit.cli.presets", "list model presets and their encoders with parameter counts"),
    "models": ("clibd_toolkit.cli.models", "list the released CLIBD models (usable with --model, no training needed)"),
    "pretrain-dna": ("clibd_toolkit.cli.pretrain_dna", "pretrain a k-mer DNA encoder with masked k-mer modelling"),
    "train": ("clibd_toolkit.cli.train", "train a CLIBD model contrastively on records"),
    "embed": ("clibd_toolkit.cli.embed",
              "embed records with a trained run into one embedding file (streamed, shardable)"),
    "simulate": ("clibd_toolkit.cli.simulate", "write a simulated barcoding survey (the embedded default dataset)"),
    "inspect": ("clibd_toolkit.cli.inspect",
                "counts, summaries and a record-by-record problem report of a data source"),
    "evaluate": ("clibd_toolkit.cli.evaluate",
                 "the CLIBD evaluation protocol: micro/macro top-k per rank, seen/unseen"),
    "identify": ("clibd_toolkit.cli.identify", "name specimens (photos or barcodes) against a reference library"),
    "cluster": ("clibd_toolkit.cli.cluster", "cluster unseen-species embeddings, scored against species and BINs"),
    "demo": ("clibd_toolkit.cli.demo", "the main job: simulate a survey, train, evaluate and explore it with the "
             "notebooks; one report folder"),
    "report": ("clibd_toolkit.cli.report",
               "run a notebook headless with parameters and export an offline HTML report"),
}


def _func_name(command: str) -> str:
    return command.replace("-", "_")


# --- shared options -------------------------------------------------------------------------------------------


# --- presets --------------------------------------------------------------------------------------------------


# --- models (released CLIBD checkpoints) ---------------------------------------------------------------------


# --- train ----------------------------------------------------------------------------------------------------


# --- entry point ----------------------------------------------------------------------------------------------


def build_parser() -> argparse.ArgumentParser:
    """The ``clibd`` argument parser with every subcommand."""
    from .. import __version__

    parser = argparse.ArgumentParser(
        prog="clibd", description="CLIBD-style multimodal biodiversity models: images, DNA barcodes and taxonomy "
        "text in one latent space.", epilog="Run `clibd COMMAND --help` for the options of each command.")
    parser.add_argument("--version", action="version", version=f"clibd_toolkit {__version__}")
    parser.add_argument("-v", "--verbose", action="store_true", help="log progress details to stderr")
    common = argparse.ArgumentParser(add_help=False)
    common.add_argument("-v", "--verbose", action="store_true", default=argparse.SUPPRESS,
                        help="log progress details to stderr")
    sub = parser.add_subparsers(dest="command", metavar="COMMAND")
    for name, (module_name, help_text) in COMMANDS.items():
        p = sub.add_parser(name, help=help_text, description=help_text, parents=[common])
        module = importlib.import_module(module_name)
        getattr(module, f"add_{_func_name(name)}_arguments")(p)
    return parser


def main(argv: Sequence[str] | None = None) -> int:
    """Entry point of the ``clibd`` command: returns the exit status (2 with a one-line message on bad input)."""
    from ..errors import ClibdError

    parser = build_parser()
    args = parser.parse_args(argv)
    logging.basicConfig(level=logging.INFO if args.verbose else logging.WARNING, format="%(levelname)s %(message)s")
    if not args.command:
        parser.print_help()
        return 2
    module = importlib.import_module(COMMANDS[args.command][0])
    try:
        return int(getattr(module, f"run_{_func_name(args.command)}")(args) or 0)
    except ClibdError as exc:
        message = " ".join(str(exc).split())
        sys.stderr.write(f"clibd {args.command}: error: {message}\n")
        return 2
    except KeyboardInterrupt:
        sys.stderr.write(f"clibd {args.command}: interrupted\n")
        return 130
    except OSError as exc:
        sys.stderr.write(f"clibd {args.command}: error: {exc}\n")
        return 2
