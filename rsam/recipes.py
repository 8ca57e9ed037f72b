"""Typed training recipes: omegaconf YAML validated against a dataclass schema before any work starts.

``load_recipe(path, overrides)`` merges the YAML file and dotted overrides (``trainer.max_steps=10``) into the
schema. An unknown or misspelt key, a value of the wrong type and an impossible combination each raise
:class:`RecipeError`, whose message names the key (``recipe key 'optim.lr': ...``). The model section is
:class:`rsam.models.RemoteSAMConfig` itself, so recipes and ``config.json`` files share one definition.
"""

from __future__ import annotations

import dataclasses
import difflib
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path

from omegaconf import MISSING, DictConfig, OmegaConf
from omegaconf.errors import OmegaConfBaseException

from rsam.models import RemoteSAMConfig

RECIPE_DIR = Path(__file__).resolve().parents[1] / "recipes"
MINILM = "minilm"
WANDB_MODES = ("offline", "online", "disabled")
CPU_UNSUPPORTED_PRECISIONS = ("16-mixed", "16-true", "16")
DEEPSPEED = "deepspeed"
DEEPSPEED_PRECISIONS = ("32-true", "32", "bf16-mixed", "bf16-true", "16-mixed", "16-true")  # fp16: GPUs only
LOCAL_FILE_KEYS = ("init.text_encoder", "init.weights")


class RecipeError(ValueError):
    """A recipe that cannot run; the message names the offending key."""


def _data_dir() -> str:
    """The checkout's data folder (or $RSAM_DATA_DIR), as `rsam data demo` uses."""
    from rsam.data.demo import repo_data_dir

    return str(repo_data_dir())


if not OmegaConf.has_resolver("rsam_data"):
    OmegaConf.register_resolver("rsam_data", _data_dir)  # ${rsam_data:}: $RSAM_DATA_DIR or <checkout>/data


@dataclass
class InitSection:
    text_encoder: str | None = None  # "minilm" (the packaged MiniLM-L6) or a local HF BERT folder
    weights: str | None = None  # rsam model folder (convert/export) or an official .pth: the whole network


@dataclass
class DataSection:
    dirs: list[str] = MISSING
    batch_size: int = 2
    num_workers: int = 2
    samples_per_rank: int | None = None
    seed: int = 2401
    train_split: str = "train"
    val_split: str = "val"
    test_split: str = "test"
    predict_split: str | None = None  # default: test_split
    mix_shards: int = 4
    cache_decoded: bool = False  # keep decoded samples in memory (small datasets, num_workers 0)
    vocab_file: str | None = None


@dataclass
class OptimSection:
    lr: float = 3e-5
    weight_decay: float = 1e-2
    betas: list[float] = field(default_factory=lambda: [0.9, 0.999])
    eps: float = 1e-8
    amsgrad: bool = False
    poly_power: float = 0.9
    trained_text_layers: int = 10
    dice_weight: float = 0.1
    class_weights: list[float] = field(default_factory=lambda: [0.9, 1.1])
    dice_smooth: float = 1e-6


@dataclass
class TrainerSection:
    accelerator: str = "auto"
    devices: int | str = "auto"
    num_nodes: int = 1
    strategy: str = "auto"  # auto, ddp, deepspeed (see the deepspeed section), or a Lightning strategy name
    precision: str = "32-true"
    max_epochs: int | None = None
    max_steps: int = -1
    max_time: str | None = None  # "DD:HH:MM:SS", a safety stop
    check_val_every_n_epoch: int | None = 1
    val_check_interval: float | None = None
    log_every_n_steps: int = 10
    sync_batchnorm: bool = False
    gradient_clip_val: float | None = None
    accumulate_grad_batches: int = 1
    limit_train_batches: float | None = None
    limit_val_batches: float | None = None
    limit_test_batches: float | None = None
    num_sanity_val_steps: int = 2
    deterministic: bool = False
    enable_progress_bar: bool = True
    default_root_dir: str = "outputs/rsam"


@dataclass
class DeepSpeedSection:
    """Used when ``trainer.strategy: deepspeed``. bf16 is ``trainer.precision: bf16-mixed`` (or ``bf16-true``)."""

    stage: int = 2  # ZeRO stage 1 (optimizer states), 2 (+ gradients) or 3 (+ parameters) partitioned over ranks
    offload_optimizer: bool = False  # optimizer states and step on the CPU (DeepSpeedCPUAdam replaces AdamW)
    offload_parameters: bool = False  # stage 3 only: parameters on the CPU too
    overlap_comm: bool = True
    contiguous_gradients: bool = True
    reduce_bucket_size: int = 200_000_000
    allgather_bucket_size: int = 200_000_000


@dataclass
class CheckpointSection:
    monitor: str = "val/oIoU"  # the official selection: best validation oIoU
    mode: str = "max"
    save_top_k: int = 1
    save_last: bool = True
    dirpath: str | None = None  # default: <default_root_dir>/checkpoints


@dataclass
class WandbSection:
    enabled: bool = True
    mode: str = "offline"
    project: str = "rsam"
    name: str | None = None
    save_dir: str | None = None  # default: default_root_dir
    panel_samples: int = 4


@dataclass
class PredictSection:
    out_dir: str | None = None  # default: <default_root_dir>/predictions
    max_samples: int | None = 16


@dataclass
class ModelSection(RemoteSAMConfig):
    """The architecture (:class:`RemoteSAMConfig`) plus how it runs, which is not part of the architecture."""

    activation_checkpointing: bool = False  # recompute each Swin stage, the CIM and the decoder in backward
    compile: bool = False  # torch.compile the network (Module.compile: the state_dict keys are unchanged)


MODEL_RUNTIME_KEYS = ("activation_checkpointing", "compile")


@dataclass
class Recipe:
    name: str = "rsam"
    seed: int = 2401
    threads: int | None = None  # torch intra-op threads per process (default: torch's choice)
    model: ModelSection = field(default_factory=ModelSection)
    init: InitSection = field(default_factory=InitSection)
    data: DataSection = field(default_factory=DataSection)
    optim: OptimSection = field(default_factory=OptimSection)
    trainer: TrainerSection = field(default_factory=TrainerSection)
    deepspeed: DeepSpeedSection = field(default_factory=DeepSpeedSection)
    checkpoint: CheckpointSection = field(default_factory=CheckpointSection)
    wandb: WandbSection = field(default_factory=WandbSection)
    predict: PredictSection = field(default_factory=PredictSection)


def _schema_keys(schema, prefix: str = "") -> list[str]:
    keys = []
    for f in dataclasses.fields(schema):
        keys.append(prefix + f.name)
        default = f.default_factory() if f.default_factory is not dataclasses.MISSING else f.default
        if dataclasses.is_dataclass(default):
            keys.extend(_schema_keys(type(default), f"{prefix}{f.name}."))
    return keys


def _explain(err: OmegaConfBaseException, source: str) -> RecipeError:
    key = getattr(err, "full_key", None) or "?"
    message = str(err).splitlines()[0]
    hint = ""
    if "not in" in message or "Key '" in message:
        close = difflib.get_close_matches(key, _schema_keys(Recipe), n=1, cutoff=0.6)
        if close and "Did you mean" not in message:
            hint = f" (did you mean '{close[0]}'?)"
        message = "unknown key" + (": " + message if "Did you mean" in message else "")
    return RecipeError(f"{source}: recipe key '{key}': {message}{hint}")


def recipe_path(name_or_path: str | Path) -> Path:
    """A recipe file path, or the name of a bundled recipe (``demo`` -> ``recipes/demo.yaml``)."""
    path = Path(name_or_path)
    if path.is_file():
        return path
    bundled = RECIPE_DIR / f"{name_or_path}.yaml"
    if bundled.is_file():
        return bundled
    raise FileNotFoundError(
        f"recipe {name_or_path} not found (a YAML file, or one of {sorted(p.stem for p in RECIPE_DIR.glob('*.yaml'))})"
    )


def load_recipe(path: str | Path | None, overrides: Sequence[str] = (), *, check_files: bool = True) -> DictConfig:
    """Schema-checked recipe (a read-only ``DictConfig``); raises :class:`RecipeError` naming the bad key."""
    merged = OmegaConf.structured(Recipe)
    sources = []
    if path is not None:
        resolved = recipe_path(path)
        try:
            sources.append((str(resolved), OmegaConf.load(resolved)))
        except Exception as err:  # yaml errors
            raise RecipeError(f"{resolved}: not a valid YAML recipe: {err}") from err
    for item in overrides:
        if "=" not in item:
            raise RecipeError(f"override {item!r}: expected KEY=VALUE (e.g. trainer.max_steps=10)")
    if overrides:
        sources.append(("command-line override", OmegaConf.from_dotlist(list(overrides))))
    for source, config in sources:
        try:
            merged = OmegaConf.merge(merged, config)
        except OmegaConfBaseException as err:
            raise _explain(err, source) from err
    missing = sorted(OmegaConf.missing_keys(merged))
    if missing:
        raise RecipeError(f"recipe key '{missing[0]}': required but not set")
    check_recipe(merged, check_files=check_files)
    OmegaConf.set_readonly(merged, True)
    return merged


def model_config(recipe: DictConfig) -> RemoteSAMConfig:
    data = OmegaConf.to_container(recipe.model)
    for key in MODEL_RUNTIME_KEYS:
        data.pop(key, None)
    return RemoteSAMConfig.from_dict(data)


def model_runtime(recipe: DictConfig) -> dict:
    """The ``model:`` settings that say how the network runs (``activation_checkpointing``, ``compile``)."""
    return {key: bool(recipe.model[key]) for key in MODEL_RUNTIME_KEYS}


def optim_settings(recipe: DictConfig) -> dict:
    return OmegaConf.to_container(recipe.optim)


def uses_deepspeed(recipe: DictConfig) -> bool:
    return recipe.trainer.strategy == DEEPSPEED


def deepspeed_config(recipe: DictConfig) -> dict:
    """The DeepSpeed config dict of a recipe (its ``deepspeed`` section, batch size, clipping and precision).

    ``gradient_accumulation_steps`` is left out: Lightning sets it from ``trainer.accumulate_grad_batches``.
    """
    ds, trainer = recipe.deepspeed, recipe.trainer
    zero = {
        "stage": int(ds.stage),
        "overlap_comm": bool(ds.overlap_comm),
        "contiguous_gradients": bool(ds.contiguous_gradients),
        "reduce_bucket_size": int(ds.reduce_bucket_size),
        "allgather_bucket_size": int(ds.allgather_bucket_size),
    }
    if ds.stage == 3:
        zero["stage3_gather_16bit_weights_on_model_save"] = False  # checkpoints stay sharded; `rsam export` merges
    if ds.offload_optimizer:
        zero["offload_optimizer"] = {"device": "cpu", "pin_memory": trainer.accelerator != "cpu"}
    if ds.offload_parameters:
        zero["offload_param"] = {"device": "cpu", "pin_memory": trainer.accelerator != "cpu"}
    config = {
        "zero_optimization": zero,
        "zero_allow_untested_optimizer": True,
        "train_micro_batch_size_per_gpu": int(recipe.data.batch_size),
        "gradient_clipping": float(trainer.gradient_clip_val or 0.0),
    }
    precision = str(trainer.precision)
    if precision.startswith("bf16"):
        # DeepSpeed casts parameters only; the BatchNorm running stats must follow, or batch_norm mixes dtypes
        config["bf16"] = {"enabled": True}
        config["data_types"] = {"buffer_dtype": "bf16"}
    elif precision.startswith("16"):
        config["fp16"] = {
            "enabled": True,
            "loss_scale": 0,
            "initial_scale_power": 16,
            "loss_scale_window": 1000,
            "hysteresis": 2,
            "min_loss_scale": 1,
        }
        config["data_types"] = {"buffer_dtype": "fp16"}
    return config


def _fail(key: str, message: str) -> None:
    raise RecipeError(f"recipe key '{key}': {message}")


def _check_model(recipe: DictConfig) -> RemoteSAMConfig:
    try:
        return model_config(recipe)
    except (ValueError, TypeError) as err:
        _fail("model", str(err))


def _check_text_init(recipe: DictConfig, cfg: RemoteSAMConfig) -> None:
    from rsam.checkpoint.text_encoder import text_config_from_hf
    from rsam.text import minilm_model_dir

    source = recipe.init.text_encoder
    folder = minilm_model_dir() if source == MINILM else Path(source)
    found = text_config_from_hf(folder / "config.json")
    for name in ("vocab_size", "hidden_size", "num_layers", "num_heads", "intermediate_size"):
        if getattr(found, name) != getattr(cfg.text, name):
            _fail(
                f"model.text.{name}",
                f"{getattr(cfg.text, name)} does not match the text encoder in "
                f"init.text_encoder ({folder}: {getattr(found, name)})",
            )


def _check_deepspeed(recipe: DictConfig) -> None:
    ds, trainer = recipe.deepspeed, recipe.trainer
    if ds.stage not in (1, 2, 3):
        _fail("deepspeed.stage", f"ZeRO stage must be 1, 2 or 3, got {ds.stage}")
    if ds.offload_parameters and ds.stage != 3:
        _fail("deepspeed.offload_parameters", f"parameter offload needs deepspeed.stage=3, got {ds.stage}")
    if ds.offload_optimizer and recipe.optim.amsgrad:
        _fail("optim.amsgrad", "DeepSpeedCPUAdam (deepspeed.offload_optimizer) has no amsgrad")
    if str(trainer.precision) not in DEEPSPEED_PRECISIONS:
        _fail("trainer.precision", f"{trainer.precision} with DeepSpeed: use one of {DEEPSPEED_PRECISIONS}")
    for key in ("reduce_bucket_size", "allgather_bucket_size"):
        if ds[key] < 1:
            _fail(f"deepspeed.{key}", f"must be >= 1, got {ds[key]}")


def check_recipe(recipe: DictConfig, *, check_files: bool = True) -> None:
    """Cross-field rules (the schema already checked keys and types)."""
    cfg = _check_model(recipe)
    optim, trainer, data = recipe.optim, recipe.trainer, recipe.data
    if optim.lr <= 0:
        _fail("optim.lr", f"must be > 0, got {optim.lr}")
    if optim.weight_decay < 0:
        _fail("optim.weight_decay", f"must be >= 0, got {optim.weight_decay}")
    if not 0 <= optim.trained_text_layers <= cfg.text.num_layers:
        _fail(
            "optim.trained_text_layers",
            f"{optim.trained_text_layers} is outside [0, model.text.num_layers = {cfg.text.num_layers}]",
        )
    if len(optim.class_weights) != cfg.num_classes:
        _fail("optim.class_weights", f"{len(optim.class_weights)} weights for model.num_classes={cfg.num_classes}")
    if not 0 <= optim.dice_weight <= 1:
        _fail("optim.dice_weight", f"must be in [0, 1], got {optim.dice_weight}")
    if data.batch_size < 1:
        _fail("data.batch_size", f"must be >= 1, got {data.batch_size}")
    if data.num_workers < 0:
        _fail("data.num_workers", f"must be >= 0, got {data.num_workers}")
    if not data.dirs:
        _fail("data.dirs", "at least one dataset folder is needed")
    if data.cache_decoded and data.num_workers > 0:
        _fail("data.cache_decoded", "needs data.num_workers=0 (a worker's cache dies with the worker each epoch)")
    if trainer.max_steps in (-1, None) and trainer.max_epochs in (-1, None):
        _fail("trainer.max_steps", "set trainer.max_steps or trainer.max_epochs: the poly schedule needs a length")
    on_cpu = trainer.accelerator == "cpu"
    if trainer.strategy.startswith(DEEPSPEED) and trainer.strategy != DEEPSPEED:
        _fail(
            "trainer.strategy",
            f"{trainer.strategy!r}: use 'deepspeed' and set the ZeRO stage and offload in the "
            "recipe's deepspeed section (deepspeed.stage, deepspeed.offload_optimizer, ...)",
        )
    if uses_deepspeed(recipe):
        _check_deepspeed(recipe)
    if on_cpu and str(trainer.precision) in CPU_UNSUPPORTED_PRECISIONS:
        _fail("trainer.precision", f"{trainer.precision} is not supported on CPU (use 32-true or bf16-mixed)")
    if recipe.init.weights and recipe.init.text_encoder:
        _fail("init.text_encoder", "init.weights already holds the text encoder; set only one of the two")
    if recipe.checkpoint.mode not in ("max", "min"):
        _fail("checkpoint.mode", f"must be 'max' or 'min', got {recipe.checkpoint.mode!r}")
    if recipe.wandb.mode not in WANDB_MODES:
        _fail("wandb.mode", f"must be one of {WANDB_MODES}, got {recipe.wandb.mode!r}")
    if recipe.wandb.panel_samples < 0:
        _fail("wandb.panel_samples", f"must be >= 0, got {recipe.wandb.panel_samples}")
    if check_files:
        for key in LOCAL_FILE_KEYS:
            value = OmegaConf.select(recipe, key)
            if value and value != MINILM and not Path(value).exists():
                _fail(key, f"{value} does not exist")
        for i, folder in enumerate(data.dirs):
            if not (Path(folder) / "index.json").is_file():
                _fail(
                    f"data.dirs[{i}]",
                    f"{folder} holds no shard dataset (index.json); build one with `rsam data "
                    "...` (the demo: `rsam data demo`)",
                )
        if recipe.init.text_encoder:
            _check_text_init(recipe, cfg)
