"""Lineage consistency of a records table: each species under one genus, each genus under one family, each family
under one order. :class:`LineageChecker` checks a stream of normalised chunks (the readers use it while loading);
:func:`lineage_conflicts` tabulates every inconsistent placement of a whole table (for reports)."""
from __future__ import annotations

import numpy as np
import pandas as pd

from .errors import DataError
from .schema import RECORD_ID

#: (child rank, parent rank) pairs whose consistency is checked: one child name must sit under one parent
LINEAGE_PAIRS: tuple[tuple[str, str], ...] = (("species", "genus"), ("genus", "family"), ("family", "order"))


class LineageChecker:
    """Streaming check that each species sits under one genus, each genus under one family, each family under one
    order. The first record that places a name fixes its parent; a later record that places it elsewhere is the
    inconsistent one. Missing parents are not conflicts.

    Species are compared as full names (``"Aedes aegypti"``), as in BOLD and BIOSCAN.
    """

    def __init__(self) -> None:
        self.parent: dict[tuple[str, str], dict[str, tuple[str, str]]] = {pair: {} for pair in LINEAGE_PAIRS}

    def check(self, records: pd.DataFrame) -> list[tuple[int, DataError]]:
        """Return ``(position, error)`` for every record of ``records`` (a normalised table) that contradicts an
        earlier placement (in this table or an earlier one passed to this checker); update the placements."""
        found: dict[int, DataError] = {}
        ids = records[RECORD_ID].tolist()
        for child, parent in LINEAGE_PAIRS:
            known = self.parent[(child, parent)]
            mask = (records[child].notna() & records[parent].notna()).to_numpy()
            pos = np.flatnonzero(mask)
            if not len(pos):
                continue
            children = records[child].to_numpy(dtype=object)[pos]
            parents = records[parent].to_numpy(dtype=object)[pos]
            # first placement of each name not seen before fixes its parent
            _, first_idx = np.unique(children.astype(str), return_index=True)
            for j in first_idx:
                known.setdefault(children[j], (parents[j], ids[pos[j]]))
            expected = pd.Series(children).map({c: p for c, (p, _) in known.items()}).to_numpy(dtype=object)
            for j in np.flatnonzero(expected != parents):
                i = int(pos[j])
                c, p, first = children[j], parents[j], known[children[j]]
                if i not in found:
                    found[i] = exc = DataError(
                        f"record {ids[i]}: {child} {c!r} is placed under {parent} {p!r}, but record {first[1]} "
                        f"placed it under {parent} {first[0]!r}; one {child} name must have one {parent} (fix the "
                        f"lineage, or load with lineage='ignore' to keep both)",
                        record_id=ids[i], value=p)
                    exc.kind = "lineage_conflict"  # type: ignore[attr-defined]  # the reject kind
        return sorted(found.items())


def lineage_conflicts(records: pd.DataFrame) -> pd.DataFrame:
    """Every inconsistent placement in a whole table (for reports): one row per (rank, name, parent) of a name
    that has several parents, with the record count and up to 10 record ids of each placement.

    Returns:
        DataFrame with columns ``rank``, ``name``, ``parent_rank``, ``parent``, ``n_records``, ``record_ids``.
    """
    rows = []
    for child, parent in LINEAGE_PAIRS:
        sub = records.loc[records[child].notna() & records[parent].notna(), [RECORD_ID, child, parent]]
        if sub.empty:
            continue
        n_parents = sub.groupby(child)[parent].nunique()
        for name in n_parents.index[n_parents > 1]:
            part = sub[sub[child] == name]
            for par, grp in part.groupby(parent, sort=True):
                rows.append({"rank": child, "name": name, "parent_rank": parent, "parent": par,
                             "n_records": len(grp), "record_ids": grp[RECORD_ID].head(10).tolist()})
    return pd.DataFrame(rows, columns=["rank", "name", "parent_rank", "parent", "n_records", "record_ids"])
