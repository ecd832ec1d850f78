"""FASTA files (plain or gzipped, any line endings) with taxonomy in the headers.

Header layouts and how they fill the ranks (``order``, ``family``, ``genus``, ``species``). Nothing is guessed: a
rank is filled only when the header says it, and the raw taxon text is kept in the extra column ``taxon``.

1. **BOLD style** ``>processid|taxon|marker[|accession]`` (BOLD's FASTA download). ``taxon`` is the lowest name of
   the identification:

   - a name of two or more words (a binomial or a BOLD/BIOSCAN interim species name: ``Aedes aegypti``,
     ``Asynapta sp. 1``, ``Battaristis MalaiseMetz3348``, ``gelBioLep01 BioLep743``; names above species are one
     word) fills ``species`` only; the genus is *not* derived from it, because an interim name's first word need not
     be a valid genus;
   - a single word ending in ``-idae`` fills ``family`` (the ICZN fixes this ending for animal family names,
     Art. 29.2);
   - any other single word (``Diptera``, ``Asynapta``) could be an order, a genus or another rank, so no rank is
     filled unless ``lowest_rank=`` says which rank these names are;
   - a ``taxon`` holding ``;`` is read as a lineage (below).

   The third field is the marker code; records of another marker than ``marker`` (default ``COI-5P``) are rejected
   with that reason (``marker=None`` keeps all).
2. **Rank-prefixed lineages** ``>id k__Animalia;p__Arthropoda;c__Insecta;o__Diptera;f__Culicidae;g__Aedes;
   s__Aedes_aegypti`` (QIIME/UNITE style; ``_`` in a species becomes a space, and an epithet-only ``s__aegypti``
   is joined to its ``g__`` genus), and SINTAX ``>id;tax=k:Animalia,o:Diptera,f:Culicidae,g:Aedes,s:Aedes_aegypti;``:
   each rank is exactly what its prefix says. Prefixes: ``k``/``d`` kingdom, ``p`` phylum, ``c`` class, ``o``
   order, ``f`` family, ``g`` genus, ``s`` species; kingdom/phylum/class go to extra columns.
3. **Plain lineages** ``>id;Insecta;Diptera;Cecidomyiidae;Asynapta;Asynapta sp. 1``. With ``lineage_ranks=`` (one
   rank name per field after the id, e.g. ``("class", "order", "family", "genus", "species")``) fields are read by
   position. Without it, only what the lineage itself proves is filled: ``species`` when the last field has two
   or more words, ``genus`` when the field before it is the binomial's first word, ``family`` when exactly one field ends
   in ``-idae``, and ``order`` only for the strict layout ``...;order;family;genus;species`` (the field right before
   the family, when family and genus are adjacent and that field carries no superfamily/subfamily/tribe ending).
   Lineages with other intermediate ranks need ``lineage_ranks=`` or prefixes.
4. Anything else (``>id`` or ``>id free text``): the id is the first word, the text is kept as ``description``, and
   all ranks stay missing.

Problems: text before the first header, a record with an empty sequence and a record of another marker are
rejected (or raised) with the file, the record and the line; barcodes are checked by
:func:`~clibd_toolkit.records.clean_barcode` (case, gaps, U, IUPAC codes, invalid characters, length).
"""
from __future__ import annotations

import re
import zlib
from pathlib import Path
from typing import Any, Iterator, Sequence

import pandas as pd

from ..errors import DataError
from ..schema import DNA, RANKS, RECORD_ID
from .base import ReadContext, open_text, register_reader

_PREFIX_RANKS = {"k": "kingdom", "d": "kingdom", "p": "phylum", "c": "class", "o": "order", "f": "family",
                 "g": "genus", "s": "species"}
_QIIME = re.compile(r"^([a-zA-Z])__(.*)$")
_SINTAX = re.compile(r"^([a-zA-Z]):(.*)$")
_BINOMIAL = re.compile(r"^[A-Za-z][\w.-]*\s+\S")
#: endings of animal ranks between order and genus (ICZN Art. 29.2): superfamily, family, subfamily, tribe
_SUFFIXED = ("oidea", "idae", "inae", "ini")


def _is_binomial(name: str) -> bool:
    return bool(_BINOMIAL.match(name))


def _parse_prefixed(fields: Sequence[str], pattern: re.Pattern[str]) -> dict[str, str] | None:
    out: dict[str, str] = {}
    for f in fields:
        m = pattern.match(f.strip())
        if not m:
            return None
        rank = _PREFIX_RANKS.get(m.group(1).lower())
        value = m.group(2).strip()
        if rank is not None and value:
            out[rank] = value
    if "species" in out:
        sp = out["species"].replace("_", " ").strip()
        if " " not in sp and sp[:1].islower() and "genus" in out:
            sp = f"{out['genus']} {sp}"  # epithet-only species (Greengenes style) joined to its stated genus
        out["species"] = sp
    return out


def _parse_plain(fields: list[str], lineage_ranks: Sequence[str] | None, rid: str) -> dict[str, str]:
    if lineage_ranks is not None:
        if len(fields) > len(lineage_ranks):
            raise DataError(f"record {rid}: lineage has {len(fields)} fields {fields} but lineage_ranks names "
                            f"{len(lineage_ranks)} ranks {list(lineage_ranks)}", record_id=rid, value=";".join(fields))
        return {rank: value for rank, value in zip(lineage_ranks, fields) if rank and rank != "-" and value}
    out: dict[str, str] = {}
    n = len(fields)
    genus_idx = None
    if n and _is_binomial(fields[-1]):
        out["species"] = fields[-1]
        if n >= 2 and fields[-2] == fields[-1].split()[0]:
            out["genus"] = fields[-2]
            genus_idx = n - 2
    families = [i for i, f in enumerate(fields) if f.endswith("idae") and " " not in f]
    if len(families) == 1:
        f = families[0]
        out["family"] = fields[f]
        if genus_idx == f + 1 and f >= 1 and " " not in fields[f - 1] and not fields[f - 1].endswith(_SUFFIXED):
            out["order"] = fields[f - 1]
    return out


def _parse_lowest(taxon: str, lowest_rank: str | None) -> dict[str, str]:
    if lowest_rank is not None:
        return {lowest_rank: taxon}
    if _is_binomial(taxon):
        return {"species": taxon}
    if " " not in taxon and taxon.endswith("idae"):
        return {"family": taxon}
    return {}


def parse_header(header: str, *, lineage_ranks: Sequence[str] | None = None,
                 lowest_rank: str | None = None) -> dict[str, Any]:
    """Parse one FASTA header (without ``>``) into ``record_id``, ranks and extra fields (see the module doc).

    Raises:
        DataError: a plain lineage longer than ``lineage_ranks``.
    """
    header = header.strip()
    rec: dict[str, Any] = {}
    if "|" in header.split(" ")[0] or ("|" in header and ";" not in header.split("|")[0]):
        fields = [f.strip() for f in header.split("|")]
        rec[RECORD_ID] = fields[0]
        taxon = fields[1] if len(fields) > 1 else ""
        if len(fields) > 2 and fields[2]:
            rec["marker"] = fields[2]
        if len(fields) > 3 and fields[3]:
            rec["accession"] = fields[3]
        if taxon:
            rec["taxon"] = taxon
            if ";" in taxon:
                parts = [p.strip() for p in taxon.split(";") if p.strip()]
                rec.update(_parse_prefixed(parts, _QIIME) or _parse_plain(parts, lineage_ranks, fields[0]))
            else:
                rec.update(_parse_lowest(taxon, lowest_rank))
        return rec
    if ";" in header:
        first, _, rest = header.partition(";")
        words = first.split(None, 1)
        rid = words[0] if words else ""
        parts = ([words[1]] if len(words) > 1 else []) + rest.split(";")
        parts = [p.strip() for p in parts if p.strip()]
        rec[RECORD_ID] = rid
        if parts and parts[0].startswith("tax="):
            rec["taxon"] = parts[0][4:]
            rec.update(_parse_prefixed([p for p in parts[0][4:].split(",") if p.strip()], _SINTAX) or {})
        elif parts:
            rec["taxon"] = ";".join(parts)
            rec.update(_parse_prefixed(parts, _QIIME) or _parse_plain(parts, lineage_ranks, rid))
        return rec
    words = header.split(None, 1)
    rec[RECORD_ID] = words[0] if words else ""
    if len(words) > 1:
        desc = words[1].strip()
        prefixed = _parse_prefixed([desc], _QIIME) if _QIIME.match(desc) else None
        if prefixed:
            rec["taxon"] = desc
            rec.update(prefixed)
        else:
            rec["description"] = desc
    return rec


@register_reader("fasta")
def read_fasta_chunks(
    path: Path,
    ctx: ReadContext,
    *,
    chunk_size: int | None = None,
    marker: str | None = "COI-5P",
    lineage_ranks: Sequence[str] | None = None,
    lowest_rank: str | None = None,
) -> Iterator[tuple[pd.DataFrame, list[int]]]:
    """Chunk source for FASTA files. ``row`` numbers in messages and rejects are FASTA record numbers (1-based).

    Args:
        marker: keep only BOLD-style records of this marker (third header field); ``None`` keeps every marker.
        lineage_ranks: rank of each ``;``-separated lineage field after the id, e.g.
            ``("class", "order", "family", "genus", "species")``; names outside order/family/genus/species become
            extra columns.
        lowest_rank: the rank of single-word BOLD-style taxon names (e.g. ``"genus"``); by default they fill no rank.
    """
    if lowest_rank is not None and lowest_rank not in RANKS:
        raise DataError(f"lowest_rank must be one of {list(RANKS)} or None, got {lowest_rank!r}")
    if lineage_ranks is not None and (isinstance(lineage_ranks, str) or not all(isinstance(r, str) for r in lineage_ranks)):
        raise DataError(f"lineage_ranks must be a list of rank names, got {lineage_ranks!r}")
    batch: list[dict[str, Any]] = []
    rows: list[int] = []
    state = {"n": 0}

    def finish(header: str, line_no: int, seq: list[str]) -> None:
        state["n"] += 1
        k = state["n"]
        ctx.n_read += 1
        try:
            rec = parse_header(header, lineage_ranks=lineage_ranks, lowest_rank=lowest_rank)
        except DataError as exc:
            ctx.fail(DataError(f"{path}: line {line_no}: {exc}", record_id=exc.record_id, value=exc.value),
                     row=k, record_id=exc.record_id, column="header", value=header, kind="parse")
            return
        rid = rec.get(RECORD_ID, "")
        code = rec.get("marker")
        if marker is not None and code and code != marker:
            ctx.fail(DataError(
                f"{path}: record {rid} (line {line_no}) has marker {code!r}, not {marker!r}; pass marker=None to "
                "keep every marker, or on_error='skip' to leave them out", record_id=rid, value=code),
                row=k, record_id=rid, column="marker", value=code, kind="marker")
            return
        sequence = "".join(seq)
        if rid and not sequence.strip():
            ctx.fail(DataError(
                f"{path}: record {rid} (line {line_no}) has an empty sequence; every FASTA record needs its barcode "
                "on the lines after its header", record_id=rid), row=k, record_id=rid, column=DNA, value="",
                kind="no_modality")
            return
        rec[DNA] = sequence
        batch.append(rec)
        rows.append(k)

    def flush() -> tuple[pd.DataFrame, list[int]]:
        frame = pd.DataFrame(batch)
        if RECORD_ID not in frame.columns:
            frame[RECORD_ID] = pd.Series(dtype=object)
        out = (frame, list(rows))
        batch.clear()
        rows.clear()
        return out

    header: str | None = None
    header_line = 0
    seq: list[str] = []
    orphan_line: int | None = None
    try:
        with open_text(path) as fh:
            for line_no, line in enumerate(fh, 1):
                line = line.rstrip("\r\n")
                if line.startswith(">"):
                    if header is not None:
                        finish(header, header_line, seq)
                        if chunk_size and len(batch) >= chunk_size:
                            yield flush()
                    elif orphan_line is not None:
                        _orphan(ctx, path, orphan_line)
                        orphan_line = None
                    header, header_line, seq = line[1:], line_no, []
                elif header is None:
                    if line.strip() and orphan_line is None:
                        orphan_line = line_no
                elif not line.startswith(";"):  # ';' lines are comments in old FASTA
                    seq.append(line)
    except (OSError, EOFError, zlib.error) as exc:
        raise DataError(f"{path}: cannot be read as FASTA ({exc}); expected plain or gzipped text") from None
    if header is not None:
        finish(header, header_line, seq)
    elif orphan_line is not None:
        _orphan(ctx, path, orphan_line)
    if batch:
        yield flush()


def _orphan(ctx: ReadContext, path: Path, line_no: int) -> None:
    ctx.n_read += 1
    ctx.fail(DataError(
        f"{path}: line {line_no}: sequence text before the first '>' header; a FASTA record starts with a '>id' "
        "line (is this a FASTA file?)"), row=None, record_id=None, column="header", value=f"line {line_no}",
        kind="parse")
