"""``clibd inspect``: what a data source holds and everything wrong with it, record by record.

:func:`inspect_records` reads any supported source with ``on_error="skip"`` semantics (nothing stops it: every
record that cannot be loaded becomes a finding with its reason) and reports

- counts: records read / loaded / rejected, records with a barcode, an image, each rank; distinct names per rank,
  per split;
- sequence lengths (min, 5 %, median, mean, 95 %, max; records with IUPAC codes, shorter than one 5-mer, longer than
  the 660-nt model input);
- image sizes and modes;
- problems, each with its record id (and row): invalid characters, empty / over-long / too-short barcodes, empty or
  duplicate ids, unknown splits, records without any modality, wrong markers, unparsable FASTA text, image paths
  escaping the data root, missing / unreadable / oversized images, and inconsistent lineages (a genus under two
  families, a species under two genera, a family under two orders).

Images: every image is opened **header-only** (PIL reads the size and mode without decoding pixels; this catches
missing, empty, non-image and oversized files cheaply), and a random sample of ``decode_sample`` images (seeded) is
fully decoded with :func:`~clibd_toolkit.images.load_image` to catch truncated or corrupt files; ``images="decode"``
decodes every image, ``images="none"`` skips them. For very large sources ``max_image_checks`` limits the header
checks to a seeded random sample (the report says how many of how many were checked).

Inconsistent lineages are judged over the whole source: for a name with several parents, the parent holding most
records (ties: alphabetical) is taken as the intended one and the records under the others are reported.
"""
from __future__ import annotations

import io
import json
import logging
import warnings
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Literal

import numpy as np
import pandas as pd

from .errors import DataError, DataFileError
from .schema import DNA, IMAGE, RANKS, RECORD_ID, SPLIT

logger = logging.getLogger(__name__)

ImageCheck = Literal["header", "decode", "none"]
#: barcodes longer than this are truncated by the 5-mer tokenizer (CLIBD's input is 660 nt)
MODEL_INPUT_NT = 660
KMER = 5
PROBLEM_COLUMNS = ["kind", "record_id", "row", "column", "value", "message"]


@dataclass
class InspectionReport:
    """The result of :func:`inspect_records`.

    Attributes:
        source: what was inspected; ``format``: the reader used.
        counts: records read / loaded / rejected and per-modality counts.
        rank_counts: per rank: ``n_labelled``, ``n_missing``, ``n_distinct``.
        split_counts: per split (and ``all``): ``n_records`` and distinct names per rank.
        sequence_lengths: summary of barcode lengths (nt).
        image_sizes: summary of image widths/heights/modes of the images that could be opened.
        problems: one row per problem: ``kind``, ``record_id``, ``row``, ``column``, ``value``, ``message``.
        lineage: the inconsistent placements (see :func:`clibd_toolkit.lineage.lineage_conflicts`).
    """

    source: str
    format: str
    counts: dict[str, int]
    rank_counts: pd.DataFrame
    split_counts: pd.DataFrame
    sequence_lengths: dict[str, Any]
    image_sizes: dict[str, Any]
    problems: pd.DataFrame
    lineage: pd.DataFrame = field(default_factory=pd.DataFrame)

    @property
    def ok(self) -> bool:
        """True when no problem was found."""
        return self.problems.empty

    def problem_counts(self) -> dict[str, int]:
        """Number of problems of each kind."""
        return {str(k): int(v) for k, v in self.problems["kind"].value_counts().sort_index().items()}

    def to_dict(self) -> dict[str, Any]:
        """A JSON-serialisable dict of everything in the report."""
        def records(frame: pd.DataFrame) -> list[dict[str, Any]]:
            return json.loads(frame.to_json(orient="records", force_ascii=False)) if len(frame) else []

        return {
            "source": self.source, "format": self.format, "counts": self.counts,
            "rank_counts": records(self.rank_counts), "split_counts": records(self.split_counts),
            "sequence_lengths": self.sequence_lengths, "image_sizes": self.image_sizes,
            "problem_counts": self.problem_counts(), "problems": records(self.problems),
            "lineage_conflicts": records(self.lineage),
        }

    def to_text(self, max_listed: int = 50) -> str:
        """A plain-text report; at most ``max_listed`` problems are listed one per line (all are in
        :attr:`problems` / :meth:`to_dict`)."""
        c = self.counts
        lines = [f"source: {self.source} (format {self.format})",
                 f"records: {c['n_read']} read, {c['n_loaded']} loaded, {c['n_rejected']} rejected; "
                 f"{c['with_dna']} with a barcode, {c['with_image']} with an image, {c['with_species']} with a species",
                 "", "ranks:", _indent(self.rank_counts.to_string(index=False))]
        if len(self.split_counts):
            lines += ["", "splits:", _indent(self.split_counts.to_string(index=False))]
        s = self.sequence_lengths
        if s.get("n"):
            lines += ["", f"barcode length (nt): min {s['min']}, 5% {s['p5']}, median {s['median']}, mean {s['mean']}, "
                          f"95% {s['p95']}, max {s['max']}; {s['n_iupac']} with IUPAC codes, {s['n_longer_than_input']}"
                          f" longer than the {MODEL_INPUT_NT}-nt model input (truncated)"]
        im = self.image_sizes
        if im.get("n_checked"):
            lines += ["", f"images: {im['n_checked']} of {im['n_with_image']} checked ({im['mode']}), "
                          f"{im['n_readable']} readable; width "
                          f"{im['width_min']}-{im['width_max']} (median {im['width_median']}), height "
                          f"{im['height_min']}-{im['height_max']} (median {im['height_median']}); modes {im['modes']}"]
        lines.append("")
        if self.ok:
            lines.append("problems: none found")
        else:
            counts = ", ".join(f"{k} {v}" for k, v in self.problem_counts().items())
            lines.append(f"problems: {len(self.problems)} ({counts})")
            for row in self.problems.head(max_listed).itertuples(index=False):
                rid = row.record_id if isinstance(row.record_id, str) else "-"
                lines.append(f"  [{row.kind}] {rid}: {row.message}")
            if len(self.problems) > max_listed:
                lines.append(f"  ... and {len(self.problems) - max_listed} more (see the JSON report)")
        return "\n".join(lines)


def _indent(text: str) -> str:
    return "\n".join("  " + line for line in text.splitlines())


# --- images -----------------------------------------------------------------------------------------------------


def _image_header(value: Any) -> tuple[int, int, str]:
    """Width, height and mode of an image, reading only its header (no pixel decoding)."""
    from PIL import Image, UnidentifiedImageError

    from .images import _IMAGE_SOURCES

    src: Any = value
    if isinstance(value, str):
        fetch = next((f for p, f in _IMAGE_SOURCES.items() if value.startswith(p)), None)
        if fetch is not None:
            src = fetch(value)
    if isinstance(src, (bytes, bytearray)):
        if not src:
            raise DataError("image bytes are empty (0 bytes)")
        fh: Any = io.BytesIO(bytes(src))
    else:
        path = Path(src)
        if not path.is_file():
            raise DataFileError(f"image file {path} does not exist")
        if path.stat().st_size == 0:
            raise DataError(f"image file {path} is empty (0 bytes)")
        fh = path
    try:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore", Image.DecompressionBombWarning)
            with Image.open(fh) as img:
                return img.size[0], img.size[1], img.mode
    except UnidentifiedImageError:
        raise DataError(f"{src if isinstance(src, (str, Path)) else 'image bytes'} is not an image PIL can read "
                        "(wrong extension or not an image file)") from None
    except Image.DecompressionBombError as exc:
        raise DataError(f"refused as a possible decompression bomb ({exc})") from None
    except (OSError, SyntaxError, ValueError) as exc:
        raise DataError(f"image header cannot be read ({exc})") from None


def _check_images(ids: list[str], values: list[Any], mode: ImageCheck, decode_sample: int, seed: int,
                  progress: bool, problems: list[dict[str, Any]], limit: int | None = None) -> dict[str, Any]:
    from .images import MAX_PIXELS, load_image

    if mode == "none" or not values:
        return {"n_checked": 0, "mode": mode, "n_with_image": len(values)}
    n_with_image = len(values)
    if limit is not None and len(values) > limit:
        pick = sorted(np.random.default_rng(seed).choice(len(values), size=limit, replace=False).tolist())
        ids, values = [ids[i] for i in pick], [values[i] for i in pick]
    sizes: list[tuple[int, int]] = []
    modes: dict[str, int] = {}
    readable: list[int] = []
    iterator: Any = range(len(values))
    if progress:
        from tqdm.auto import tqdm

        iterator = tqdm(iterator, desc="checking images", unit="img")
    for i in iterator:
        try:
            w, h, m = _image_header(values[i])
        except DataError as exc:
            kind = "missing_image" if isinstance(exc, DataFileError) else "unreadable_image"
            problems.append({"kind": kind, "record_id": ids[i], "row": None, "column": IMAGE,
                             "value": str(values[i])[:120] if not isinstance(values[i], bytes) else "<bytes>",
                             "message": f"record {ids[i]}: {exc}"})
            continue
        if w * h > MAX_PIXELS:
            problems.append({"kind": "image_too_large", "record_id": ids[i], "row": None, "column": IMAGE,
                             "value": f"{w}x{h}", "message": f"record {ids[i]}: image is {w}x{h} = {w * h:,} pixels, "
                             f"over the limit of {MAX_PIXELS:,}; it will be refused (possible decompression bomb)"})
            continue
        sizes.append((w, h))
        modes[m] = modes.get(m, 0) + 1
        readable.append(i)
    to_decode = readable if mode == "decode" else sorted(
        np.random.default_rng(seed).choice(readable, size=min(decode_sample, len(readable)), replace=False).tolist()
        if readable else [])
    n_bad_decode = 0
    for i in to_decode:
        try:
            load_image(values[i], record_id=ids[i])
        except DataError as exc:
            n_bad_decode += 1
            problems.append({"kind": "unreadable_image", "record_id": ids[i], "row": None, "column": IMAGE,
                             "value": str(values[i])[:120] if not isinstance(values[i], bytes) else "<bytes>",
                             "message": str(exc)})
    out: dict[str, Any] = {"n_checked": len(values), "n_with_image": n_with_image, "mode": mode,
                           "n_decoded": len(to_decode),
                           "n_readable": len(readable) - n_bad_decode, "modes": modes}
    if sizes:
        arr = np.asarray(sizes)
        for j, name in enumerate(("width", "height")):
            out[f"{name}_min"] = int(arr[:, j].min())
            out[f"{name}_median"] = float(np.median(arr[:, j]))
            out[f"{name}_max"] = int(arr[:, j].max())
    else:
        out.update({f"{n}_{s}": None for n in ("width", "height") for s in ("min", "median", "max")})
    return out


# --- the inspection -------------------------------------------------------------------------------------------


def _lineage_problems(table: pd.DataFrame) -> tuple[pd.DataFrame, list[dict[str, Any]]]:
    from .lineage import lineage_conflicts

    conflicts = lineage_conflicts(table)
    problems = []
    for (rank, name), grp in conflicts.groupby(["rank", "name"], sort=True):
        parent_rank = grp["parent_rank"].iat[0]
        majority = grp.sort_values(["n_records", "parent"], ascending=[False, True])["parent"].iat[0]
        others = sorted(set(grp["parent"]) - {majority})
        mask = (table[rank] == name) & table[parent_rank].isin(others)
        for rid, par in zip(table.loc[mask, RECORD_ID], table.loc[mask, parent_rank]):
            problems.append({"kind": "lineage_conflict", "record_id": rid, "row": None, "column": parent_rank,
                             "value": par, "message": f"record {rid}: {rank} {name!r} is under {parent_rank} {par!r}"
                             f" here but under {majority!r} in most records ({', '.join(map(repr, sorted(grp['parent'])))}"
                             " all occur)"})
    return conflicts, problems


def inspect_records(
    source: Any,
    *,
    format: str = "auto",
    images: ImageCheck = "header",
    decode_sample: int = 100,
    max_image_checks: int | None = None,
    seed: int = 0,
    chunk_size: int = 50_000,
    progress: bool = True,
    **options: Any,
) -> InspectionReport:
    """Inspect a data source (any format :func:`~clibd_toolkit.readers.read_records` reads, or a DataFrame).

    Never stops at a bad record: the source is read with ``on_error="skip"`` and every rejected record, image problem
    and lineage inconsistency becomes a row of :attr:`InspectionReport.problems` naming the record.

    Args:
        source: path or DataFrame.
        format: reader format (default: detected).
        images: ``"header"`` (open every image header-only and fully decode ``decode_sample`` of them),
            ``"decode"`` (decode all) or ``"none"``.
        decode_sample: images fully decoded in ``"header"`` mode (a seeded random sample).
        max_image_checks: check at most this many images (a seeded random sample); ``None`` checks all.
        seed: seed of the samples.
        chunk_size: records per chunk while reading (bounded memory: only ids, ranks, splits, barcode lengths and
            image references are kept).
        progress: show a progress bar while checking images.
        **options: reader options (``columns=``, ``image_root=``, ``marker=``, ...).

    Returns:
        An :class:`InspectionReport`.

    Raises:
        DataFileError: the source does not exist.
        DataError: the source cannot be read at all (unknown format, not a table, unknown option) — problems of
            single records never raise.
    """
    from .readers import iter_record_chunks

    if images not in ("header", "decode", "none"):
        raise DataError(f"images must be 'header', 'decode' or 'none', got {images!r}")
    stream = iter_record_chunks(source, chunk_size=chunk_size, format=format, on_error="skip", lineage="ignore",
                                **options)
    keep_cols = [RECORD_ID, *RANKS, SPLIT]
    parts: list[pd.DataFrame] = []
    lengths: list[np.ndarray] = []
    iupac = 0
    image_ids: list[str] = []
    image_values: list[Any] = []
    try:
        for chunk in stream:
            parts.append(chunk[keep_cols].copy())
            dna = chunk[DNA]
            has = dna.notna().to_numpy()
            seqs = dna[has].tolist()
            lengths.append(np.fromiter((len(s) for s in seqs), dtype=np.int64, count=len(seqs)))
            lens = np.zeros(len(chunk), dtype=np.int64)
            lens[has] = lengths[-1]
            parts[-1]["_len"] = lens
            # cleaned barcodes hold only A/C/G/T and IUPAC codes: anything left after deleting ACGT is an IUPAC code
            iupac += sum(1 for s in seqs if s.encode("ascii").translate(None, b"ACGT"))
            with_image = chunk[IMAGE].notna().to_numpy()
            image_ids.extend(chunk.loc[with_image, RECORD_ID].tolist())
            image_values.extend(chunk.loc[with_image, IMAGE].tolist())
    except DataError as exc:
        if stream.n_read == 0 and not len(stream.rejects):
            raise
        # a file that breaks mid-way (e.g. a parse error after some rows): report what was read and the break
        stream.rejects.add(row=None, record_id=None, column="", value="", reason=str(exc), kind="parse")
    table = pd.concat(parts, ignore_index=True) if parts else pd.DataFrame(columns=keep_cols + ["_len"])
    problems: list[dict[str, Any]] = [
        {"kind": r["kind"], "record_id": r["record_id"], "row": r["row"], "column": r["column"], "value": r["value"],
         "message": r["reason"]} for r in stream.rejects.rows]
    short = table[(table["_len"] > 0) & (table["_len"] < KMER)]
    for rid, n in zip(short[RECORD_ID], short["_len"]):
        problems.append({"kind": "short_barcode", "record_id": rid, "row": None, "column": DNA, "value": int(n),
                         "message": f"record {rid}: barcode is {n} nt, shorter than one {KMER}-mer; the DNA encoder "
                                    "cannot encode it"})
    lineage, lineage_problems = _lineage_problems(table)
    problems += lineage_problems
    image_summary = _check_images(image_ids, image_values, images, decode_sample, seed, progress, problems,
                                  max_image_checks)
    all_lengths = np.concatenate(lengths) if lengths else np.zeros(0, dtype=np.int64)
    report = InspectionReport(
        source=stream.source, format=stream.format,
        counts={"n_read": int(stream.n_read), "n_loaded": int(len(table)), "n_rejected": int(len(stream.rejects)),
                "with_dna": int(len(all_lengths)), "with_image": int(len(image_values)),
                "with_species": int(table["species"].notna().sum())},
        rank_counts=pd.DataFrame([{"rank": r, "n_labelled": int(table[r].notna().sum()),
                                   "n_missing": int(table[r].isna().sum()),
                                   "n_distinct": int(table[r].nunique(dropna=True))} for r in RANKS]),
        split_counts=_split_counts(table),
        sequence_lengths=_length_summary(all_lengths, iupac),
        image_sizes=image_summary,
        problems=pd.DataFrame(problems, columns=PROBLEM_COLUMNS),
        lineage=lineage,
    )
    return report


def _split_counts(table: pd.DataFrame) -> pd.DataFrame:
    if table[SPLIT].isna().all():
        return pd.DataFrame(columns=["split", "n_records", *[f"n_{r}" for r in RANKS]])
    from .schema import SPLITS

    rows = []
    groups = [(s, table[table[SPLIT] == s]) for s in SPLITS if (table[SPLIT] == s).any()]
    if table[SPLIT].isna().any():
        groups.append(("<none>", table[table[SPLIT].isna()]))
    groups.append(("all", table))
    for name, part in groups:
        rows.append({"split": name, "n_records": len(part), **{f"n_{r}": int(part[r].nunique()) for r in RANKS}})
    return pd.DataFrame(rows)


def _length_summary(lengths: np.ndarray, iupac: int) -> dict[str, Any]:
    if not len(lengths):
        return {"n": 0}
    q = np.percentile(lengths, [5, 50, 95])
    return {"n": int(len(lengths)), "min": int(lengths.min()), "p5": float(q[0]), "median": float(q[1]),
            "mean": round(float(lengths.mean()), 1), "p95": float(q[2]), "max": int(lengths.max()),
            "n_iupac": int(iupac), "n_shorter_than_kmer": int((lengths < KMER).sum()),
            "n_longer_than_input": int((lengths > MODEL_INPUT_NT).sum())}
