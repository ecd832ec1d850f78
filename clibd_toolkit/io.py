"""Small file helpers shared by every stage: atomic writes, checksums, safe tensor loading.

Outputs appear only when complete: everything is written to a temporary file in the same folder, flushed,
fsynced and renamed over the destination (``os.replace`` is atomic on POSIX and Windows).
"""
from __future__ import annotations

import contextlib
import hashlib
import json
import math
import os
import tempfile
from collections.abc import Collection
from pathlib import Path
from typing import Any, Iterator

import numpy as np


@contextlib.contextmanager
def atomic_path(path: str | Path, suffix: str = "") -> Iterator[Path]:
    """Yield a temporary path next to ``path``; on success rename it to ``path``, on error delete it.

    ``suffix`` is given to the temporary name for writers that choose the format by extension.
    """
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp_name = tempfile.mkstemp(prefix=f".{path.name}.", suffix=(suffix or "") + ".tmp", dir=path.parent)
    os.close(fd)
    tmp = Path(tmp_name)
    try:
        yield tmp
        if tmp.exists():
            # mkstemp creates 0600 files; give the output the permissions a plain open() would (umask)
            umask = os.umask(0)
            os.umask(umask)
            os.chmod(tmp, 0o666 & ~umask)
        _fsync(tmp)
        os.replace(tmp, path)
        _fsync_dir(path.parent)
    except BaseException:
        with contextlib.suppress(FileNotFoundError):
            tmp.unlink()
        raise


def atomic_write_bytes(path: str | Path, data: bytes) -> None:
    """Write ``data`` to ``path`` through a temporary file and a rename: readers see the old or the new file."""
    with atomic_path(path) as tmp:
        tmp.write_bytes(data)


def atomic_write_text(path: str | Path, text: str) -> None:
    """Write UTF-8 ``text`` to ``path`` atomically."""
    atomic_write_bytes(path, text.encode("utf-8"))


def _fsync(path: Path) -> None:
    with open(path, "rb") as fh:
        os.fsync(fh.fileno())


def _fsync_dir(path: Path) -> None:
    if os.name != "posix":
        return
    fd = os.open(path, os.O_RDONLY)
    try:
        os.fsync(fd)
    finally:
        os.close(fd)


def sha256_file(path: str | Path, chunk: int = 1 << 20) -> str:
    """Hex SHA-256 of a file, read in chunks."""
    digest = hashlib.sha256()
    with open(path, "rb") as fh:
        for block in iter(lambda: fh.read(chunk), b""):
            digest.update(block)
    return digest.hexdigest()


def is_temporary(path: Path) -> bool:
    """True for the temporary files :func:`atomic_path` leaves behind when a process is killed mid-write."""
    return path.name.startswith(".") and path.name.endswith(".tmp")


def unpickling_error(path: Path, exc: Exception) -> Exception:
    """The toolkit's error for a ``torch.load(weights_only=True)`` refusal: UnsafeFileError when the file names code
    to run (a global outside the tensor allow-list), CheckpointError when it is simply not a pickle of tensors."""
    from .errors import CheckpointError, UnsafeFileError

    text = str(exc)
    if "GLOBAL" in text or "global" in text.split("WeightsUnpickler error:")[-1][:200]:
        detail = next((line.strip() for line in text.splitlines() if "GLOBAL" in line or "global" in line), text)
        return UnsafeFileError(
            f"{path} was refused: loading it would execute code from the file ({detail[:200]}). Only weights are "
            "loaded (safetensors or torch.save of tensors); re-save the weights with torch.save(model.state_dict()) "
            "or safetensors")
    detail = next((line.strip() for line in text.splitlines()[1:] if line.strip() and "WeightsUnpickler" not in line),
                  text.splitlines()[0] if text else "")
    return CheckpointError(f"{path} is not a readable weights file ({detail[:200]}); expected a torch.save of "
                           "tensors or a safetensors file")


def load_tensors(path: str | Path) -> dict:
    """Load a state dict without executing code: safetensors, or ``torch.load(weights_only=True)`` for
    ``.pt``/``.pth``/``.bin`` files.

    Raises:
        CheckpointError: the file is missing or unreadable.
        UnsafeFileError: the file is a pickle that would execute code (refused, never run).
    """
    import pickle

    import torch

    from .errors import CheckpointError

    path = Path(path)
    if not path.is_file():
        raise CheckpointError(f"weights file {path} does not exist")
    if path.suffix == ".safetensors":
        from safetensors import SafetensorError
        from safetensors.torch import load_file

        try:
            return load_file(str(path))
        except (SafetensorError, OSError, ValueError) as exc:
            raise CheckpointError(f"{path} is not a readable safetensors file ({exc})") from None
    try:
        obj = torch.load(path, map_location="cpu", weights_only=True)
    except pickle.UnpicklingError as exc:
        raise unpickling_error(path, exc) from None
    except (RuntimeError, EOFError, OSError, ValueError) as exc:
        raise CheckpointError(f"{path} is not a readable weights file ({exc})") from None
    if isinstance(obj, dict):
        for key in ("state_dict", "model", "model_state_dict"):
            if key in obj and isinstance(obj[key], dict):
                obj = obj[key]
                break
    if not isinstance(obj, dict):
        raise CheckpointError(f"{path} holds a {type(obj).__name__}, not a state dict of tensors")
    return obj


def same_file(a: str | Path, b: str | Path) -> bool:
    """Whether two paths name the same file or folder (resolved, symlinks followed; also hard links)."""
    try:
        pa, pb = Path(a).expanduser(), Path(b).expanduser()
        if pa.exists() and pb.exists():
            return os.path.samefile(pa, pb)
        return pa.resolve() == pb.resolve()
    except (OSError, ValueError, RuntimeError):  # not a usable path (e.g. a DNA sequence given in its place)
        return False


def refuse_replacing_inputs(output: str | Path, inputs: dict[str, str | Path | None], *, option: str = "--out") -> None:
    """ConfigError when ``output`` is one of ``inputs`` (option name -> path; None entries are skipped): an output
    never replaces an input of the same command."""
    from .errors import ConfigError

    for name, path in inputs.items():
        if path is not None and str(path) and same_file(output, path):
            raise ConfigError(f"{option} {output} is the same file as {name} {path}: writing there would replace "
                              f"the input; choose another {option} path")


def refuse_foreign_folder(folder: str | Path, *, overwrite: bool, what: str, option: str = "--out",
                          flag: str = "--overwrite", own: Collection[str] = ()) -> None:
    """ConfigError when ``folder`` exists and is not empty, unless ``overwrite``: a command never writes into a
    non-empty folder it did not create. ``own`` names (``fnmatch`` patterns) what the command itself writes there:
    a folder holding only such entries is its own earlier output and is written again. The message lists what is
    there that the command did not write."""
    from fnmatch import fnmatchcase

    from .errors import ConfigError

    path = Path(folder)
    if overwrite or not path.exists():
        return
    if not path.is_dir():
        raise ConfigError(f"{option} {folder} is a file, not a folder; choose a new folder for the {what}")
    entries = sorted(p.name + ("/" if p.is_dir() else "") for p in path.iterdir())
    foreign = [e for e in entries if not any(fnmatchcase(e.rstrip("/"), pattern) for pattern in own)]
    if foreign:
        shown = ", ".join(foreign[:10]) + (f", ... ({len(foreign)} entries)" if len(foreign) > 10 else "")
        raise ConfigError(f"{option} {folder} is not empty and is not a {what} ({shown}); choose a new folder, or "
                          f"pass {flag} to write into it (files of the same names are replaced)")


def fresh_folder(path: str | Path, *, marker: str = "run.json") -> Path:
    """Make ``path`` an empty folder for a notebook's (or any job's) own output, removing a previous output of the same kind
    (recognised by ``marker``) so that the notebook can be re-run. Anything else in the way is an error.

    Raises:
        ConfigError: ``path`` exists, is not empty and does not hold ``marker``.
    """
    import shutil

    from .errors import ConfigError

    path = Path(path).expanduser()
    occupied = path.is_file() or (path.is_dir() and any(path.iterdir()))
    if occupied:
        if not (path / marker).is_file():
            raise ConfigError(f"{path} exists and is not a previous output of this notebook (no {marker}); choose "
                              "another OUTPUT_DIR or remove it")
        shutil.rmtree(path)
    path.mkdir(parents=True, exist_ok=True)
    return path


def write_json(obj: Any, path: str | Path) -> Path:
    """Write ``obj`` as indented JSON, atomically (NaN -> null); returns the path."""
    def clean(value: Any) -> Any:
        if isinstance(value, float) and math.isnan(value):
            return None
        if isinstance(value, dict):
            return {str(k): clean(v) for k, v in value.items()}
        if isinstance(value, (list, tuple)):
            return [clean(v) for v in value]
        if isinstance(value, np.generic):
            return clean(value.item())
        return value

    path = Path(path)
    atomic_write_text(path, json.dumps(clean(obj), indent=1, default=str) + "\n")
    return path
