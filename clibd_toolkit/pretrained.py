"""The released CLIBD models by name: a registry (open_clip's ``pretrained.py`` pattern) and a hub-aware loader.

:func:`load_pretrained` takes a registry name (``clibd models`` lists them), a released checkpoint file, or a
folder holding ``best.pth`` (else ``last.pth``, the official code's own rule), and returns a ready
:class:`~clibd_toolkit.model.CLIBDModel` (see :mod:`clibd_toolkit.official` for the conversion). Names are fetched
from the Hugging Face model repository ``bioscan-ml/clibd`` with ``huggingface_hub``: the current ``ver_1_0`` path
first, then the older paths the model card and earlier configs list; the file lands in the hub cache
(``HF_HUB_CACHE``, default ``~/.cache/huggingface/hub``) and is found there afterwards with no network
(``HF_HUB_OFFLINE=1`` works). With no network and nothing cached the error says what to download and where to put it.

The hub paths are derived from the official configs (``bioscan-ml/clibd`` ``global_config.yaml`` ``version: ver_1_0``
and each final-experiment config's ``dataset`` / ``model_output_name``); file sizes are computed from the key layout
of each model (fp32), not read from the hub. The official code is MIT-licensed; the checkpoints' own terms are on
the hub's model card. Cite :data:`CITATION` when reporting results.
"""
from __future__ import annotations

import difflib
import os
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from .errors import CheckpointError, ConfigError

HUB_REPO = "bioscan-ml/clibd"
LICENSE = "official code MIT (github.com/bioscan-ml/clibd); checkpoints: see the model card on the hub"
CITATION = """@inproceedings{gong2025clibd,
    title={{CLIBD}: Bridging Vision and Genomics for Biodiversity Monitoring at Scale},
    author={ZeMing Gong and Austin Wang and Xiaoliang Huo and Joakim Bruslund Haurum
        and Scott C. Lowe and Graham W. Taylor and Angel X Chang},
    booktitle={The Thirteenth International Conference on Learning Representations},
    year={2025},
    url={https://openreview.net/forum?id=d5HUnyByAI},
}"""

#: parameters (fp32 values) per encoder of the released models, from their key layout
_VALUES = {"image": 86_540_000, "dna": 87_420_000, "text": 29_160_000}


@dataclass(frozen=True)
class ReleasedModel:
    """One released CLIBD model.

    Attributes:
        name: the registry name (``clibd models``).
        modalities: the encoders the file holds.
        data: what it was trained on.
        config: the official model config it was trained with (in ``bioscan-ml/clibd``).
        hub_paths: candidate paths in :data:`HUB_REPO`, tried in order (current layout first).
        note: anything uncertain about it.
    """

    name: str
    modalities: tuple[str, ...]
    data: str
    config: str
    hub_paths: tuple[str, ...]
    note: str = ""

    @property
    def size_bytes(self) -> int:
        """Approximate file size: 4 bytes per value of its encoders (fp32, as the official script saves)."""
        return 4 * sum(_VALUES[m] for m in self.modalities)

    def to_json_dict(self) -> dict[str, Any]:
        return {"name": self.name, "modalities": list(self.modalities), "data": self.data, "config": self.config,
                "size_bytes": self.size_bytes, "source": f"hf://{HUB_REPO}/{self.hub_paths[0]}",
                "hub_paths": list(self.hub_paths), "note": self.note}


def _entry(name: str, dataset: str, kind: str, data: str, old: tuple[str, ...] = (), note: str = "") -> ReleasedModel:
    mods = {"image_dna_text": ("image", "dna", "text"), "image_dna": ("image", "dna"), "image_text": ("image", "text")}
    folder = "for_bioscan_1m" if dataset == "bioscan_1m" else "for_bioscan_5m"
    return ReleasedModel(
        name=name, modalities=mods[kind], data=data,
        config=f"bioscanclip/config/model_config/{folder}/final_experiments/{kind}_seed_42.yaml",
        hub_paths=(f"ckpt/bioscan_clip/ver_1_0/{dataset}/{kind}_4gpu/best.pth", *old), note=note)


_OLD = "ckpt/bioscan_clip"
REGISTRY: dict[str, ReleasedModel] = {m.name: m for m in (
    _entry("clibd-bioscan1m-image-dna-text", "bioscan_1m", "image_dna_text", "BIOSCAN-1M, 50 epochs",
           (f"{_OLD}/final_experiments/image_dna_text_4gpu_50epoch/best.pth",)),
    _entry("clibd-bioscan1m-image-dna", "bioscan_1m", "image_dna", "BIOSCAN-1M, 50 epochs",
           (f"{_OLD}/final_experiments/image_dna_4gpu_50epoch/best.pth",)),
    _entry("clibd-bioscan1m-image-text", "bioscan_1m", "image_text", "BIOSCAN-1M, 50 epochs",
           note="its publication on the hub is uncertain"),
    _entry("clibd-bioscan5m-image-dna-text", "bioscan_5m", "image_dna_text", "BIOSCAN-5M, 20 epochs",
           (f"{_OLD}/new_5M_training/image_dna_text_4gpu_50epoch/best.pth",
            f"{_OLD}/new_5M_training/trained_with_5M_image_dna_text/best.pth")),
    _entry("clibd-bioscan5m-image-dna", "bioscan_5m", "image_dna", "BIOSCAN-5M, 20 epochs",
           (f"{_OLD}/new_5M_training/image_dna_4gpu_50epoch/best.pth",)),
    _entry("clibd-bioscan5m-image-text", "bioscan_5m", "image_text", "BIOSCAN-5M, 20 epochs",
           note="its publication on the hub is uncertain"),
)}
DEFAULT_MODEL = "clibd-bioscan5m-image-dna-text"


def list_pretrained() -> list[ReleasedModel]:
    """The released CLIBD models, in registry order."""
    return list(REGISTRY.values())


def get_pretrained(name: str) -> ReleasedModel:
    """The registry entry ``name``; ConfigError with the closest names otherwise."""
    if name not in REGISTRY:
        match = difflib.get_close_matches(name, list(REGISTRY), n=1, cutoff=0.4)
        hint = f"; did you mean {match[0]!r}?" if match else ""
        raise ConfigError(f"{name!r} is neither a released CLIBD model{hint} nor an existing file or folder "
                          f"(released models: {', '.join(REGISTRY)}; `clibd models` lists them)")
    return REGISTRY[name]


def cached_file(entry: ReleasedModel, *, cache_dir: str | Path | None = None) -> Path | None:
    """The local copy of ``entry`` in the hub cache (any of its paths), or None; never touches the network."""
    from huggingface_hub import try_to_load_from_cache

    for path in entry.hub_paths:
        found = try_to_load_from_cache(HUB_REPO, path, cache_dir=str(cache_dir) if cache_dir else None)
        if isinstance(found, str) and Path(found).is_file():
            return Path(found)
    return None


def download(entry: ReleasedModel, *, cache_dir: str | Path | None = None) -> Path:
    """The checkpoint file of ``entry``: from the hub cache, else downloaded into it (each hub path in turn).

    Raises:
        CheckpointError: not cached and not downloadable (offline, or no candidate path on the hub); the message
            says what to download and where to put it.
    """
    from huggingface_hub import hf_hub_download
    from huggingface_hub.errors import (EntryNotFoundError, HfHubHTTPError, LocalEntryNotFoundError,
                                        OfflineModeIsEnabled)

    found = cached_file(entry, cache_dir=cache_dir)
    if found is not None:
        return found
    missing, offline = [], None
    for path in entry.hub_paths:
        try:
            return Path(hf_hub_download(HUB_REPO, path, cache_dir=str(cache_dir) if cache_dir else None))
        except (LocalEntryNotFoundError, OfflineModeIsEnabled) as exc:  # no network, nothing cached
            offline = exc
            break
        except EntryNotFoundError:  # reachable hub, no such file: try the next known path
            missing.append(path)
        except HfHubHTTPError as exc:  # the hub answered with an error (repository gone, gated, server error)
            raise CheckpointError(f"released model {entry.name!r}: the hub refused {HUB_REPO}/{path} "
                                  f"({str(exc).splitlines()[0]}); download it by hand and pass --model PATH") from None
        except OSError as exc:  # connection refused, DNS, proxy
            offline = exc
            break
    cache = cache_dir or os.environ.get("HF_HUB_CACHE") or "~/.cache/huggingface/hub"
    first = entry.hub_paths[0]
    if offline is not None:
        raise CheckpointError(
            f"released model {entry.name!r} is not in the hub cache ({cache}) and the hub cannot be reached "
            f"({type(offline).__name__}). With internet, run once: `huggingface-cli download {HUB_REPO} {first}` "
            f"(about {entry.size_bytes / 1e9:.2f} GB; it lands in the hub cache and is found offline afterwards), or "
            f"download the file by hand and pass its path: --model PATH/best.pth") from None
    raise CheckpointError(
        f"released model {entry.name!r}: none of its known paths is on {HUB_REPO} ({', '.join(missing)}); the "
        f"repository layout may have changed: browse https://huggingface.co/{HUB_REPO}/tree/main/ckpt and pass the "
        "file you download with --model PATH")


def resolve_checkpoint(name_or_path: str | Path, *, cache_dir: str | Path | None = None) -> tuple[Path, str | None]:
    """``(file, registry name or None)`` for a registry name, a checkpoint file, or a folder holding ``best.pth``
    (else ``last.pth``)."""
    path = Path(name_or_path).expanduser()
    if path.is_file():
        return path, None
    if path.is_dir():
        for candidate in ("best.pth", "last.pth"):
            if (path / candidate).is_file():
                return path / candidate, None
        raise CheckpointError(f"folder {path} holds no best.pth or last.pth (a released CLIBD checkpoint folder)")
    entry = get_pretrained(str(name_or_path))
    return download(entry, cache_dir=cache_dir), entry.name


def load_pretrained(name_or_path: str | Path = DEFAULT_MODEL, *, device: str = "cpu",
                    cache_dir: str | Path | None = None):
    """A released CLIBD model, ready to embed and identify (no training).

    Args:
        name_or_path: a name from :func:`list_pretrained` (downloaded once from the hub, then cached), a released
            ``best.pth`` file, or a folder holding one.
        device: where to put the model.
        cache_dir: hub cache folder (default: ``HF_HUB_CACHE``).

    Returns:
        A :class:`~clibd_toolkit.model.CLIBDModel` in eval mode whose ``source`` records the name, file and SHA-256.

    Example:
        >>> model = ctk.load_pretrained("clibd-bioscan5m-image-dna-text")   # doctest: +SKIP
        >>> model.encode_dna(["AACATTATATTTTATTTTTGGAATTTGAGC..."])
    """
    from .official import load_official_checkpoint

    path, name = resolve_checkpoint(name_or_path, cache_dir=cache_dir)
    return load_official_checkpoint(path, device=device, name=name)
