"""Validated parameters of the notebooks in ``notebooks/`` (one config class per notebook).

Each notebook has one cell tagged ``parameters`` of typed, commented UPPER_CASE assignments (what
``papermill --help-notebook`` lists). papermill injects overrides as a cell after it, and only *warns* about names the
notebook does not declare. So the cell after that calls :func:`from_globals`, which collects every UPPER_CASE global
of the kernel and builds the notebook's config with :meth:`~clibd_toolkit.config.Config.from_dict`: an unknown name
(a typo such as ``-p EPOCH 3``) or a value of the wrong type (``-p EPOCHS three``) stops the notebook with a
:class:`~clibd_toolkit.errors.ConfigError` naming it, the closest valid name and the expected type.

Only configs live here. What the notebooks do with them is library code of the stage it serves:
:func:`clibd_toolkit.inputs.resolve_inputs` (records, model and embeddings from the common parameters),
:func:`clibd_toolkit.identification.split_reference` / :func:`~clibd_toolkit.identification.is_novel`,
:func:`clibd_toolkit.protocol.example_queries` / :func:`~clibd_toolkit.protocol.identify_queries`, and
:func:`clibd_toolkit.io.fresh_folder`.
"""
from __future__ import annotations

import logging
import re
import types
from dataclasses import dataclass
from pathlib import Path
from typing import Any, ClassVar, Literal, Mapping


from .config import Config, parse_modalities
from .errors import ConfigError
from .schema import MODALITIES, RANKS, SPLIT

log = logging.getLogger(__name__)

_PARAM_NAME = re.compile(r"^[A-Z][A-Z0-9_]*$")
#: where the analysis notebooks look for the quickstart's outputs by default (relative to their working folder)
QUICKSTART_OUTPUT = "quickstart-output"


def _check_device(config: Config, name: str = "device") -> None:
    value = getattr(config, name)
    config._require(value in ("auto", "cpu", "cuda", "mps") or value.startswith("cuda:"), name,
                    "auto, cpu, cuda, cuda:N or mps")


@dataclass(frozen=True, kw_only=True)
class NotebookConfig(Config):
    """Parameters every notebook has."""

    kind: ClassVar[str] = "notebook"
    #: the notebook file this config belongs to (informational)
    notebook: ClassVar[str] = ""

    output_dir: str = "output"  # folder for this notebook's results (metrics JSON/CSV, figures as HTML)
    device: str = "auto"  # auto | cpu | cuda | cuda:N | mps
    seed: int = 0  # every random choice (sampling, UMAP, calibration) derives from it
    smoke: bool = False  # tiny, fast run (CPU, seconds): a small simulated survey and the tiny preset

    def validate(self) -> None:
        _check_device(self)
        self._require(bool(self.output_dir.strip()), "output_dir", "a folder path")

    @property
    def output_path(self) -> Path:
        """``output_dir`` as a Path; the folder is created on first use."""
        path = Path(self.output_dir).expanduser()
        path.mkdir(parents=True, exist_ok=True)
        return path

    def to_parameters(self) -> dict[str, Any]:
        """The notebook parameters (UPPER_CASE names) of this config, e.g. for ``papermill -p``."""
        return {k.upper(): (list(v) if isinstance(v, tuple) else v) for k, v in self.to_dict().items()}


@dataclass(frozen=True, kw_only=True)
class _InputsConfig(NotebookConfig):
    """Notebooks that analyse a trained model's embeddings of a dataset."""

    data: str = f"{QUICKSTART_OUTPUT}/survey"  # records (any format load_records reads) with CLIBD splits
    run: str = f"{QUICKSTART_OUTPUT}/run"  # training run folder (clibd train --out)
    checkpoint: str = "best"  # best | last | epoch-NNNN
    # a released CLIBD model instead of RUN: a name from `clibd models` or a best.pth path ("" = use RUN)
    model: str = ""
    # embeddings of DATA ("" = embed DATA now); or the official released CLIBD embeddings (.hdf5), which carry their
    # own labels and splits (DATA is then not read)
    embeddings: str = f"{QUICKSTART_OUTPUT}/embeddings.parquet"

    def validate(self) -> None:
        super().validate()
        self._require(bool(self.checkpoint.strip()), "checkpoint", "best, last or epoch-NNNN")


# --- one config per notebook ------------------------------------------------------------------------------------


@dataclass(frozen=True, kw_only=True)
class QuickstartNotebookConfig(NotebookConfig):
    """``01_quickstart.ipynb``: simulate a survey, split, train, embed, evaluate, report."""

    kind: ClassVar[str] = "notebook_quickstart"
    notebook: ClassVar[str] = "01_quickstart.ipynb"

    output_dir: str = QUICKSTART_OUTPUT
    data: str = ""  # records to use instead of simulating ("" = the built-in survey simulator)
    records: int = 1500  # simulated records
    species: int = 80  # species in the simulated tree (genera, families scale with it)
    image_size: int = 64  # pixels of simulated images and model input (0 = the preset's own size)
    preset: str = "cpu"  # model preset: cpu (default; offline pretrained weights), tiny, paper
    modalities: str = "image,dna,text"  # modalities to align
    epochs: int = 4
    batch_size: int = 64
    lr: float = 1e-3  # peak learning rate (one-cycle)
    max_steps: int = 0  # stop after this many optimiser steps (0 = no limit)

    def validate(self) -> None:
        super().validate()
        self._require(self.records >= 50, "records", "an integer >= 50")
        self._require(self.species >= 4, "species", "an integer >= 4")
        self._require(self.image_size == 0 or 32 <= self.image_size <= 256, "image_size", "0 or 32..256")
        self._require(self.epochs >= 1, "epochs", "an integer >= 1")
        self._require(self.batch_size >= 2, "batch_size", "an integer >= 2")
        self._require(self.lr > 0, "lr", "a number > 0")
        self._require(self.max_steps >= 0, "max_steps", "an integer >= 0")
        if len(parse_modalities(self.modalities)) < 2:
            raise ConfigError(f"`QuickstartNotebookConfig.modalities` got {self.modalities!r}; contrastive training "
                              f"needs two or more of {list(MODALITIES)}")

    def effective(self) -> QuickstartNotebookConfig:
        """The settings actually used: with ``smoke``, a tiny survey (at most 300 records, 20 species, 32 px), the
        ``tiny`` preset and at most 4 optimiser steps."""
        if not self.smoke:
            return self
        return self.replace(records=min(self.records, 300), species=min(self.species, 20), image_size=32,
                            preset="tiny", epochs=1, max_steps=min(self.max_steps or 4, 4), batch_size=32)

    def simulator_config(self):
        """The survey to simulate: ``species`` species in proportionate genera, families and orders (the
        simulator's default tree shape), ``image_size`` px images (128 when 0); a smoke survey has evener species
        abundances, so that its few species still give seen and unseen ones."""
        from .simulator import SimulatorConfig

        genera = max(2, round(self.species * 0.375))
        families = max(2, min(genera, round(self.species * 0.15)))
        return SimulatorConfig(seed=self.seed, records=self.records, species=self.species, genera=genera,
                               families=families, orders=min(5, families), image_size=self.image_size or 128,
                               **({"abundance_sigma": 0.3} if self.smoke else {}))

    def model_config(self):
        """The preset restricted to ``modalities``, with ``image_size`` px input when set."""
        return _model_config(self.preset, True, self.modalities, self.image_size)

    def train_config(self):
        from .config import TrainConfig

        # validation only after the last epoch (it embeds the validation queries and keys: time the quickstart
        # spends on training instead), so the best checkpoint is the last one; and only the newest per-epoch
        # checkpoint is kept besides it (a cpu-preset checkpoint with its optimiser state is ~150 MB)
        return TrainConfig(epochs=self.epochs, batch_size=self.batch_size, lr=self.lr, max_steps=self.max_steps,
                           seed=self.seed, device=self.device, progress=False, eval_every=self.epochs,
                           keep_checkpoints=1)


def _model_config(preset: str, pretrained: bool, modalities: str, image_size: int):
    from .presets import get_preset

    cfg = get_preset(preset, pretrained=None if pretrained else False).with_modalities(modalities)
    if image_size and cfg.image is not None:
        cfg = cfg.replace(image_size=image_size, image_resize=image_size + image_size // 8)
    return cfg


@dataclass(frozen=True, kw_only=True)
class TrainNotebookConfig(NotebookConfig):
    """``02_train.ipynb``: contrastive training of any preset and modality subset."""

    kind: ClassVar[str] = "notebook_train"
    notebook: ClassVar[str] = "02_train.ipynb"

    output_dir: str = "train-output"
    data: str = f"{QUICKSTART_OUTPUT}/survey"  # training records (any format load_records reads)
    preset: str = "cpu"  # paper | cpu | tiny
    pretrained: bool = True  # start from the preset's pretrained weights (cpu: offline; paper: hub, internet once)
    modalities: str = "image,dna,text"  # any subset of two or more
    finetune: str = ""  # "" = the preset's per-encoder modes; lora | full | frozen for the encoders below
    finetune_modalities: str = ""  # encoders that FINETUNE applies to, e.g. "dna,text" ("" = all)
    lora_r: int = 4  # LoRA rank of every encoder fine-tuned with LoRA
    lora_alpha: float = 4.0  # LoRA alpha (update scaled by alpha / r; CLIBD: alpha = r)
    lora_dropout: float = 0.0
    image_size: int = 0  # model input pixels (0 = the preset's)
    epochs: int = 10
    batch_size: int = 64
    lr: float = 5e-4
    weight_decay: float = 0.01
    precision: str = "auto"  # auto (bf16 on GPU) | fp32 | bf16
    max_steps: int = 0  # stop after this many optimiser steps (0 = no limit)
    resume: bool = False  # continue the run in OUTPUT_DIR/run from its newest checkpoint

    def validate(self) -> None:
        super().validate()
        self._require(self.finetune in ("", "lora", "full", "frozen"), "finetune", "'', lora, full or frozen")
        if self.finetune_modalities:
            parse_modalities(self.finetune_modalities)
        self._require(self.lora_r >= 1, "lora_r", "an integer >= 1")
        self._require(self.lora_alpha > 0, "lora_alpha", "a number > 0")
        self._require(0 <= self.lora_dropout < 1, "lora_dropout", "a number in [0, 1)")
        self._require(self.precision in ("auto", "fp32", "bf16"), "precision", "auto, fp32 or bf16")
        self._require(self.image_size == 0 or self.image_size >= 8, "image_size", "0 or an integer >= 8")
        if len(parse_modalities(self.modalities)) < 2:
            raise ConfigError(f"`TrainNotebookConfig.modalities` got {self.modalities!r}; contrastive training needs "
                              f"two or more of {list(MODALITIES)}")

    def effective(self) -> TrainNotebookConfig:
        """With ``smoke``: the ``tiny`` preset, one epoch of at most 3 steps."""
        if not self.smoke:
            return self
        return self.replace(preset="tiny", pretrained=False, epochs=1, max_steps=min(self.max_steps or 3, 3),
                            batch_size=min(self.batch_size, 32), image_size=0)

    def data_path(self) -> str:
        """``data``; under ``smoke`` with the default path absent, the tiny simulated survey."""
        return _smoke_or(self, self.data, TrainNotebookConfig().data, "data")

    def model_config(self):
        """Preset + modalities (+ ``finetune`` for the ``finetune_modalities`` encoders, + image size); every encoder
        that ends up fine-tuned with LoRA (the preset's own or by ``finetune``) gets ``lora_r/alpha/dropout``."""
        from .config import AdapterConfig

        cfg = _model_config(self.preset, self.pretrained, self.modalities, self.image_size)
        if self.finetune:
            names = None
            if self.finetune_modalities:
                names = [m for m in parse_modalities(self.finetune_modalities) if m in cfg.modalities]
            cfg = cfg.with_adapter(AdapterConfig(mode=self.finetune), names)
        lora = [m for m in cfg.modalities if cfg.encoder(m).adapter.mode == "lora"]
        if lora:
            cfg = cfg.with_adapter(AdapterConfig(mode="lora", r=self.lora_r, alpha=self.lora_alpha,
                                                 dropout=self.lora_dropout), lora)
        return cfg

    def train_config(self):
        from .config import TrainConfig

        return TrainConfig(epochs=self.epochs, batch_size=self.batch_size, lr=self.lr, weight_decay=self.weight_decay,
                           precision=self.precision, max_steps=self.max_steps, seed=self.seed, device=self.device,
                           progress=False)


@dataclass(frozen=True, kw_only=True)
class EvaluateNotebookConfig(_InputsConfig):
    """``03_evaluate.ipynb``: the CLIBD protocol, paper table, per-taxon CSV, comparison with an earlier run."""

    kind: ClassVar[str] = "notebook_evaluate"
    notebook: ClassVar[str] = "03_evaluate.ipynb"

    output_dir: str = "evaluate-output"
    previous_metrics: str = ""  # metrics.json of an earlier evaluation to compare against ("" = none)
    stage: Literal["val", "test"] = "test"  # queries: test_seen/test_unseen or val_seen/val_unseen
    ks: tuple[int, ...] = (1, 3, 5)  # top-k accuracies (papermill: -y "KS: [1, 5]")
    pairs: str = "all"  # "all" or comma-separated QUERY->KEY pairs, e.g. "dna->dna,image->dna"
    tolerance: float = 0.005  # changes within this (absolute, 0-1) count as unchanged
    fail_on_regression: bool = False  # stop with an error (non-zero papermill exit) when any metric regressed

    def validate(self) -> None:
        super().validate()
        self._require(self.tolerance >= 0, "tolerance", "a number >= 0")

    def eval_config(self):
        from .evaluate import EvalConfig

        text = self.pairs.strip()
        pairs = text if text in ("all", "official") else tuple(p.strip() for p in text.split(",") if p.strip())
        return EvalConfig(stage=self.stage, ks=self.ks, pairs=pairs)


@dataclass(frozen=True, kw_only=True)
class LatentSpaceNotebookConfig(_InputsConfig):
    """``04_latent_space.ipynb``: images, barcodes and taxonomy text in one UMAP."""

    kind: ClassVar[str] = "notebook_latent_space"
    notebook: ClassVar[str] = "04_latent_space.ipynb"

    output_dir: str = "latent-space-output"
    modalities: str = "image,dna,text"  # which points to project
    color: str = "order"  # colour by: order | family | genus | species | modality | split
    max_records: int = 20000  # project at most this many records (seeded sample); UMAP time grows with it
    n_neighbors: int = 15  # UMAP n_neighbors
    min_dist: float = 0.1  # UMAP min_dist
    thumbnails: int = 500  # image points with a hover thumbnail (0 = none); each adds ~2 kB to the HTML
    interactive: bool = True  # also show the ipywidgets explorer (live kernel); headless reports keep the figures

    def validate(self) -> None:
        super().validate()
        parse_modalities(self.modalities)
        self._require(self.color in (*RANKS, "modality", SPLIT), "color",
                      f"one of {[*RANKS, 'modality', SPLIT]}")
        self._require(self.max_records >= 10, "max_records", "an integer >= 10")
        self._require(self.n_neighbors >= 2, "n_neighbors", "an integer >= 2")
        self._require(0.0 <= self.min_dist <= 1.0, "min_dist", "a number in [0, 1]")
        self._require(self.thumbnails >= 0, "thumbnails", "an integer >= 0")


@dataclass(frozen=True, kw_only=True)
class UnseenSpeciesNotebookConfig(_InputsConfig):
    """``05_unseen_species.ipynb``: clustering of unseen species and novelty detection."""

    kind: ClassVar[str] = "notebook_unseen_species"
    notebook: ClassVar[str] = "05_unseen_species.ipynb"

    output_dir: str = "unseen-species-output"
    modality: str = "dna"  # embeddings to cluster: dna | image | text
    method: Literal["agglomerative", "hdbscan"] = "agglomerative"
    umap_dims: int = 0  # reduce with UMAP to this many dimensions before clustering (0 = raw embeddings)
    query_modality: str = "dna"  # novelty detection: query embeddings
    key_modality: str = "dna"  # novelty detection: reference embeddings
    target_false_novel_rate: float = 0.05  # calibration: share of known species allowed to be flagged novel
    min_precision: float = 0.95  # naming: names right at least this often for every kind of query

    def validate(self) -> None:
        super().validate()
        self._require(0 < self.min_precision < 1, "min_precision", "a number in (0, 1)")
        for name in ("modality", "query_modality", "key_modality"):
            self._require(getattr(self, name) in MODALITIES, name, f"one of {list(MODALITIES)}")
        self._require(self.umap_dims >= 0, "umap_dims", "an integer >= 0")
        self._require(0 < self.target_false_novel_rate < 1, "target_false_novel_rate", "a number in (0, 1)")


@dataclass(frozen=True, kw_only=True)
class PerTaxonNotebookConfig(_InputsConfig):
    """``06_per_taxon_accuracy.ipynb``: accuracy per taxon as a sunburst/treemap, vs reference size, worst taxa."""

    kind: ClassVar[str] = "notebook_per_taxon"
    notebook: ClassVar[str] = "06_per_taxon_accuracy.ipynb"

    output_dir: str = "per-taxon-output"
    pair: str = "image->dna"  # QUERY->KEY modality pair
    split: Literal["seen", "unseen"] = "unseen"  # which queries
    stage: Literal["val", "test"] = "test"
    k: int = 1  # top-k accuracy
    chart: Literal["sunburst", "treemap"] = "sunburst"  # per-taxon chart
    rank: str = "species"  # rank of the accuracy-vs-references plot and the worst-taxa table
    n_worst: int = 25  # rows of the worst-taxa table
    interactive: bool = True  # also show dropdowns to switch pair/split/chart (live kernel)

    def validate(self) -> None:
        super().validate()
        from .evaluate import parse_pair

        parse_pair(self.pair)
        self._require(self.k >= 1, "k", "an integer >= 1")
        self._require(self.rank in RANKS, "rank", f"one of {list(RANKS)}")
        self._require(self.n_worst >= 1, "n_worst", "an integer >= 1")

    def eval_config(self):
        """The protocol settings for ``pair``: the published pairs, or every official one when ``pair`` uses a fused
        feature (``image+dna``, ``concat``, ``all`` keys) or text queries."""
        from .evaluate import KEY_MODALITIES, QUERY_MODALITIES, EvalConfig, parse_pair

        query, key = parse_pair(self.pair)
        published = query in QUERY_MODALITIES and key in KEY_MODALITIES
        return EvalConfig(stage=self.stage, ks=(self.k,), pairs="all" if published else "official")


@dataclass(frozen=True, kw_only=True)
class IdentifyNotebookConfig(_InputsConfig):
    """``07_identify.ipynb``: name a photo or a barcode against a reference library, with a novelty flag."""

    kind: ClassVar[str] = "notebook_identify"
    notebook: ClassVar[str] = "07_identify.ipynb"

    output_dir: str = "identify-output"
    query_image: str = ""  # path of a specimen photo to identify ("" = none)
    query_barcode: str = ""  # a COI barcode sequence to identify ("" = none)
    query_records: int = 2  # with neither: this many example queries from DATA (half seen, half unseen species)
    reference_splits: str = "pretrain,train,seen_keys"  # splits of DATA forming the reference library
    key_modality: str = "dna"  # reference embeddings searched: dna | image | text
    k: int = 5  # neighbours shown
    min_precision: float = 0.95  # names right at least this often for every kind of query

    def validate(self) -> None:
        super().validate()
        self._require(self.key_modality in MODALITIES, "key_modality", f"one of {list(MODALITIES)}")
        self._require(self.k >= 1, "k", "an integer >= 1")
        self._require(self.query_records >= 1, "query_records", "an integer >= 1")
        self._require(0 < self.min_precision < 1, "min_precision", "a number in (0, 1)")
        self._require(bool(self.reference_splits.strip()), "reference_splits", "a comma-separated list of splits")


NOTEBOOK_CONFIGS: dict[str, type[NotebookConfig]] = {
    cls.notebook: cls for cls in (QuickstartNotebookConfig, TrainNotebookConfig, EvaluateNotebookConfig,
                                  LatentSpaceNotebookConfig, UnseenSpeciesNotebookConfig, PerTaxonNotebookConfig,
                                  IdentifyNotebookConfig)
}


def _check_injected_names(config_class: type[NotebookConfig], history: Any) -> None:
    """ConfigError for a name papermill injected (its ``# Parameters`` cell, found in IPython's input history
    ``In``) that is not one of the notebook's UPPER_CASE parameters, whatever its case (``-p ks 5`` for ``K``)."""
    import ast
    import difflib

    if not isinstance(history, (list, tuple)):
        return
    declared = [n.upper() for n in config_class.field_names()]
    for source in history:
        if not isinstance(source, str) or not source.lstrip().startswith("# Parameters"):
            continue
        try:
            tree = ast.parse(source)
        except SyntaxError:
            continue
        for node in tree.body:
            targets = node.targets if isinstance(node, ast.Assign) else [getattr(node, "target", None)]
            for target in targets:
                name = getattr(target, "id", None)
                if name is None or name in declared or _PARAM_NAME.match(name):
                    continue  # UPPER_CASE names are checked against the config (with its own hint) below
                close = difflib.get_close_matches(name.upper(), declared, n=1, cutoff=0.5)
                hint = f"; did you mean {close[0]}?" if close else ""
                raise ConfigError(f"papermill injected parameter {name!r}, which "
                                  f"{config_class.notebook or config_class.__name__} does not declare (parameters "
                                  f"are UPPER_CASE: {', '.join(declared)}){hint}")


def from_globals(config_class: type[NotebookConfig], namespace: Mapping[str, Any]) -> NotebookConfig:
    """Build a notebook's config from its UPPER_CASE globals (the parameters cell plus papermill's injected cell).

    Args:
        config_class: e.g. :class:`EvaluateNotebookConfig`.
        namespace: the notebook's ``globals()``; call this before defining any other UPPER_CASE name. Names
            bound to modules, classes or functions (imports such as ``HTML``) are not parameters and are skipped.

    Raises:
        ConfigError: an UPPER_CASE name the notebook does not declare (with the closest valid name), or a
            value of the wrong type or out of range.
    """
    _check_injected_names(config_class, namespace.get("In"))
    params = {name.lower(): value for name, value in namespace.items()
              if _PARAM_NAME.match(name) and not callable(value) and not isinstance(value, types.ModuleType)}
    try:
        return config_class.from_dict(params)
    except ConfigError as exc:
        valid = ", ".join(n.upper() for n in config_class.field_names())
        message = str(exc)
        for name in config_class.field_names():  # speak in the notebook's parameter names
            message = message.replace(f".{name}`", f".{name}` (parameter {name.upper()})")
        raise ConfigError(f"bad parameter for {config_class.notebook or config_class.__name__}: {message}. "
                          f"Parameters: {valid}") from None


# --- parameter values -------------------------------------------------------------------------------------------


def _smoke_or(config: NotebookConfig, value: str, default: str, what: str) -> str:
    """``value``, or under ``smoke`` (when ``value`` is the default and does not exist) the tiny smoke input."""
    if config.smoke and value == default and not Path(value).expanduser().exists():
        from .demo import make_smoke_inputs

        return str(make_smoke_inputs(config.output_path / "smoke-inputs", seed=config.seed)[what])
    return value
