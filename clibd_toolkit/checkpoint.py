"""Run folders and checkpoints: atomic, self-describing, verified on load, never executing code.

A run folder (``clibd train --out RUN``) holds::

    RUN/run.json                      model config, train config, data summary, toolkit version
    RUN/history.csv                   loss, learning rate and temperature per optimiser step
    RUN/checkpoints/epoch-0003/       one folder per epoch (the newest ``keep_checkpoints`` are kept)
        model.safetensors             every model weight (safetensors: loading runs no code)
        trainer.pt                    optimiser / scheduler / RNG state (loaded with weights_only=True)
        meta.json                     epoch, step, metrics, SHA-256 of model.safetensors, configs
    RUN/checkpoints/best/             copy of the checkpoint with the best validation metric (or the last one)

Each checkpoint folder is written under a temporary name and renamed into place only when complete, so a
process killed mid-write leaves no half checkpoint that could be picked up: folders without a valid
``meta.json`` whose checksum matches are ignored.
"""
from __future__ import annotations

import json
import os
import re
import shutil
import tempfile
from pathlib import Path
from typing import Any

import torch

from .config import ModelConfig, TrainConfig
from .errors import CheckpointError
from .io import atomic_write_text, load_tensors, sha256_file

RUN_FILE = "run.json"
CHECKPOINTS = "checkpoints"
_EPOCH = re.compile(r"^epoch-(\d{4,})$")


def _fsync_tree(folder: Path) -> None:
    for path in folder.iterdir():
        if path.is_file():
            with open(path, "rb") as fh:
                os.fsync(fh.fileno())


def frozen_pretrained_names(model: torch.nn.Module) -> list[str]:
    """Parameters that training never changes and that the model config reloads anyway: frozen (non-trainable)
    parameters of encoders whose config names pretrained weights. Checkpoints leave them out."""
    names = []
    config = getattr(model, "config", None)
    for name, param in model.named_parameters():
        if param.requires_grad or not name.startswith("encoders."):
            continue
        modality = name.split(".")[1]
        if config is not None and modality in config.modalities and config.encoder(modality).pretrained is not None:
            names.append(name)
    return names


def _digest(tensors: dict[str, torch.Tensor], names: list[str]) -> str:
    import hashlib

    h = hashlib.sha256()
    for n in names:
        h.update(n.encode())
        h.update(tensors[n].detach().to("cpu", torch.float32).contiguous().numpy().tobytes())
    return h.hexdigest()


def save_checkpoint(run_dir: str | Path, name: str, model: torch.nn.Module, *, trainer_state: dict | None,
                    meta: dict[str, Any]) -> Path:
    """Write ``RUN/checkpoints/<name>/`` atomically (temporary folder, then rename).

    Frozen pretrained weights (e.g. the ``cpu`` preset's frozen MiniLM) are not stored: they come back from the
    config's pretrained source when the model is rebuilt, and a SHA-256 of them is recorded so that loading refuses
    an environment whose pretrained weights differ.
    """
    from safetensors.torch import save_file

    root = Path(run_dir) / CHECKPOINTS
    root.mkdir(parents=True, exist_ok=True)
    tmp = Path(tempfile.mkdtemp(prefix=f".{name}.", suffix=".tmp", dir=root))
    try:
        full = model.state_dict()
        excluded = frozen_pretrained_names(model)
        skip = set(excluded)
        state = {k: v.detach().to("cpu").contiguous().clone() for k, v in full.items() if k not in skip}
        save_file(state, str(tmp / "model.safetensors"))
        if trainer_state is not None:
            torch.save(trainer_state, tmp / "trainer.pt")
        meta = {**meta, "name": name, "model_sha256": sha256_file(tmp / "model.safetensors"),
                "frozen_pretrained": {"names": excluded, "sha256": _digest(full, excluded)}}
        (tmp / "meta.json").write_text(json.dumps(meta, indent=2, default=str))
        _fsync_tree(tmp)
        final = root / name
        if final.exists():
            trash = Path(tempfile.mkdtemp(prefix=f".{name}.old.", suffix=".tmp", dir=root))
            os.replace(final, trash / name)
            os.replace(tmp, final)
            shutil.rmtree(trash, ignore_errors=True)
        else:
            os.replace(tmp, final)
        return final
    except BaseException:
        shutil.rmtree(tmp, ignore_errors=True)
        raise


def read_meta(folder: Path) -> dict[str, Any] | None:
    """meta.json of a complete checkpoint folder, or None if the folder is incomplete or corrupt."""
    try:
        meta = json.loads((folder / "meta.json").read_text())
    except (OSError, json.JSONDecodeError):
        return None
    model_file = folder / "model.safetensors"
    if not model_file.is_file():
        return None
    return meta


def list_epoch_checkpoints(run_dir: str | Path) -> list[Path]:
    """Complete per-epoch checkpoint folders, oldest first (temporary/incomplete ones are ignored)."""
    root = Path(run_dir) / CHECKPOINTS
    if not root.is_dir():
        return []
    found = []
    for folder in root.iterdir():
        m = _EPOCH.match(folder.name)
        if m and folder.is_dir() and read_meta(folder) is not None:
            found.append((int(m.group(1)), folder))
    return [f for _, f in sorted(found)]


def prune_checkpoints(run_dir: str | Path, keep: int) -> None:
    """Delete all but the newest ``keep`` epoch checkpoints of ``run_dir`` (``keep <= 0``: keep all); ``best`` is
    never touched."""
    if keep <= 0:
        return
    for folder in list_epoch_checkpoints(run_dir)[:-keep]:
        shutil.rmtree(folder, ignore_errors=True)


def checkpoint_folder(run_dir: str | Path, which: str = "best") -> Path:
    """Resolve ``which`` ("best", "last", "epoch-0003" or a path) to a complete checkpoint folder."""
    run_dir = Path(run_dir)
    if which == "last":
        found = list_epoch_checkpoints(run_dir)
        if not found:
            raise CheckpointError(f"{run_dir} has no complete checkpoint; train first (clibd train --out {run_dir})")
        return found[-1]
    folder = Path(which) if Path(which).is_dir() else run_dir / CHECKPOINTS / which
    if which == "best" and not folder.is_dir():
        return checkpoint_folder(run_dir, "last")
    if read_meta(folder) is None:
        raise CheckpointError(f"checkpoint {folder} is missing or incomplete")
    return folder


def load_model_state(folder: Path, model: torch.nn.Module, *, verify: bool = True) -> dict[str, Any]:
    """Load ``folder/model.safetensors`` into ``model`` (strict), checking its SHA-256; returns the meta."""
    meta = read_meta(folder)
    if meta is None:
        raise CheckpointError(f"checkpoint {folder} is missing or incomplete")
    path = folder / "model.safetensors"
    if verify and meta.get("model_sha256") != sha256_file(path):
        raise CheckpointError(f"{path} fails its checksum (corrupt or modified); use another checkpoint")
    state = load_tensors(path)
    try:
        missing, unexpected = model.load_state_dict(state, strict=False)
    except RuntimeError as exc:  # shape mismatches
        raise CheckpointError(
            f"checkpoint {folder} does not match this model ({str(exc).splitlines()[-1].strip()}); build the model "
            "from the run's own config (load_run) rather than another preset") from None
    frozen = meta.get("frozen_pretrained") or {"names": [], "sha256": None}
    if frozen["names"]:
        missing = [k for k in missing if k not in set(frozen["names"])]
        if not missing and _digest(model.state_dict(), frozen["names"]) != frozen["sha256"]:
            raise CheckpointError(
                f"checkpoint {folder} was trained on top of frozen pretrained weights that differ from the ones this "
                "environment loads (another version of a weights package?); install the versions used in training")
    if missing or unexpected:
        raise CheckpointError(
            f"checkpoint {folder} does not match this model ({len(missing)} missing, {len(unexpected)} unexpected "
            f"weights, e.g. {(missing or unexpected)[:2]}); build the model from the run's own config "
            "(load_run) rather than another preset")
    return meta


def write_run_info(run_dir: str | Path, model_config: ModelConfig, train_config: TrainConfig,
                   data: dict[str, Any]) -> None:
    """Write ``run_dir/run.json`` atomically: the toolkit version, both configs and a summary of the data."""
    from . import __version__

    info = {"config_kind": "run", "clibd_toolkit_version": __version__, "model": model_config.to_json_dict(),
            "train": train_config.to_json_dict(), "data": data}
    atomic_write_text(Path(run_dir) / RUN_FILE, json.dumps(info, indent=2, default=str) + "\n")


def read_run_info(run_dir: str | Path) -> tuple[ModelConfig, TrainConfig, dict[str, Any]]:
    """Read ``run_dir/run.json`` back into ``(ModelConfig, TrainConfig, data summary)``; CheckpointError when it
    is missing or unreadable."""
    path = Path(run_dir) / RUN_FILE
    if not path.is_file():
        raise CheckpointError(f"{run_dir} is not a training run folder (no {RUN_FILE}); pass the --out folder of "
                              "`clibd train`")
    try:
        info = json.loads(path.read_text())
    except json.JSONDecodeError as exc:
        raise CheckpointError(f"{path} is not valid JSON ({exc})") from None
    return ModelConfig.from_dict(info["model"]), TrainConfig.from_dict(info["train"]), info.get("data", {})


def load_trainer_state(folder: Path) -> dict[str, Any]:
    """The optimiser, scheduler and progress state of an epoch checkpoint (``trainer.pt``), loaded with
    ``weights_only=True``: a file carrying code is refused with a CheckpointError."""
    path = folder / "trainer.pt"
    if not path.is_file():
        raise CheckpointError(f"{folder} has no trainer state; it cannot be resumed from")
    import pickle

    try:
        return torch.load(path, map_location="cpu", weights_only=True)
    except pickle.UnpicklingError as exc:
        from .errors import UnsafeFileError

        raise UnsafeFileError(f"{path} was refused: loading it would execute code ({exc})") from None


def load_run(run_dir: str | Path, which: str = "best", *, device: str = "cpu", preset: str | None = None):
    """Rebuild the model of a training run and load a checkpoint (default: the best one).

    Args:
        which: ``"best"``, ``"last"``, ``"epoch-0003"`` or a checkpoint folder.
        preset: if given, must match the run's preset (a guard against mixing up runs).

    Raises:
        CheckpointError: not a run folder, no complete checkpoint, checksum mismatch, or preset mismatch.
    """
    from .model import CLIBDModel

    model_config, _, _ = read_run_info(run_dir)
    if preset is not None and preset != model_config.preset:
        raise CheckpointError(f"run {run_dir} was trained with preset {model_config.preset!r}, not {preset!r}; "
                              "drop --preset or pick the matching run")
    folder = checkpoint_folder(run_dir, which)
    model = CLIBDModel(model_config)
    meta = load_model_state(folder, model)
    model.source = {"kind": "run", "run": str(Path(run_dir).resolve()), "checkpoint": folder.name,
                    "model_sha256": meta.get("model_sha256")}
    model.eval()
    return model.to(device)
