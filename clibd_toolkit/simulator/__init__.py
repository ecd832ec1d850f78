"""The built-in barcoding-survey simulator: the toolkit's embedded default dataset, with ground truth.

A taxonomy tree (orders -> families -> genera -> species, Latin-like names, BINs), COI-like barcodes evolved along
it, procedurally rendered specimen photos, label gaps and sequencing artefacts; any size, lazily, deterministic by
seed. See ``data_cards/simulator.md``.

    >>> from clibd_toolkit.simulator import SimulatorConfig, write_survey
    >>> folder = write_survey("survey", SimulatorConfig(records=3000))   # doctest: +SKIP
    >>> records = clibd_toolkit.load_records(folder)                      # doctest: +SKIP
"""
from __future__ import annotations

from .config import ORDER_NAMES, SimulatorConfig
from .survey import TRUTH_COLUMNS, Survey, simulate_records, survey_splits, write_survey

__all__ = [
    "ORDER_NAMES",
    "SimulatorConfig",
    "Survey",
    "TRUTH_COLUMNS",
    "simulate_records",
    "survey_splits",
    "write_survey",
]
