"""Typed training recipes: omegaconf YAML validated against a dataclass schema before any work starts.

``load_recipe(path, overrides)`` merges the YAML file and dotted overrides (``trainer.max_steps=10``) into the
schema. An unknown or misspelt key, a value of the wrong type and an impossible combination each raise
:class:`RecipeError`, whose message names the key (``recipe key 'optim.lr': ...``). The model section is
:class:`rsam.models.RemoteSAMConfig` itself, so recipes and ``config.json`` files share one definition.
"""

from __future__ import annotations

import dataclasses
import difflib
import re
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path
from urllib.parse import urlparse

from omegaconf import MISSING, DictConfig, OmegaConf
from omegaconf.errors import OmegaConfBaseException

from rsam.models import RemoteSAMConfig

RECIPE_DIR = Path(__file__).resolve().parents[1] / "recipes"
MINILM = "minilm"
WANDB_MODES = ("offline", "online", "disabled")
CPU_UNSUPPORTED_PRECISIONS = ("16-mixed", "16-true", "16")
DEEPSPEED = "deepspeed"
DEEPSPEED_PRECISIONS = ("32-true", "32", "bf16-mixed", "bf16-true", "16-mixed", "16-true")  # fp16: GPUs only
LOCAL_FILE_KEYS = ("init.text_encoder", "init.weights", "init.backbone")


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
    weights: str | None = None  # the whole network: anything rsam.checkpoint.load_model reads
    backbone: str | None = None  # an ImageNet Swin checkpoint (Microsoft release .pth or timm layout) for the trunk


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
    mode: str = "indexed"  # indexed (wids, random access, exact resume) | stream (webdataset pipeline, training)
    cache_dir: str | None = None  # local cache of remote shards (indexed mode); default $RSAM_CACHE_DIR or ~/.cache
    cache_limit_gb: float | None = None  # bound of that cache (least recently used shards are deleted); None: none
    on_error: str = "raise"  # bad data at training time: raise (name shard and key) | skip (drop, count, log)
    max_skip_fraction: float = 0.01  # with skip: stop when more than this share of an epoch's samples is bad
    verify: str = "size"  # start-up shard check: size (exists, indexed size) | sha256 (also hashes) | none
    shuffle_buffer: int = 1000  # stream mode: sample shuffle buffer per worker


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
    val_check_interval: int | float | None = None  # an int: every that many batches; a float in (0, 1]: a fraction
    log_every_n_steps: int = 10
    sync_batchnorm: bool = False
    gradient_clip_val: float | None = None
    accumulate_grad_batches: int = 1
    limit_train_batches: int | float | None = None  # an int: that many batches; a float in [0, 1]: that fraction
    limit_val_batches: int | float | None = None
    limit_test_batches: int | float | None = None
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
    save_last: bool = True  # must stay true: interruptions and failures save last.ckpt (exact resume)
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

    activation_checkpointing: bool = False  # recompute each Swin block, the CIM and each decoder level in backward
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
        _expand_model_name(config, source)
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


def _expand_model_name(config: DictConfig, source: str) -> None:
    """``model: NAME`` (a registered configuration, e.g. remotesam-base) -> that configuration's fields; later
    sources (the command line) may still override single fields (``model.swin.drop_path_rate=0.2``)."""
    from rsam.models.registry import model_config_by_name

    name = config.get("model") if isinstance(config, DictConfig) else None
    if not isinstance(name, str):
        return
    try:
        fields = model_config_by_name(name).to_dict()
    except KeyError as err:
        raise RecipeError(f"{source}: recipe key 'model': {err.args[0]}") from None
    fields.pop("format", None)
    config.model = fields


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


def text_encoder_folder(recipe: DictConfig) -> Path:
    from rsam.text import minilm_model_dir

    source = recipe.init.text_encoder
    return minilm_model_dir() if source == MINILM else Path(source)


def _check_text_init(recipe: DictConfig, cfg: RemoteSAMConfig) -> None:
    from rsam.checkpoint.text_encoder import CHECKED_FIELDS, text_config_from_hf

    folder = text_encoder_folder(recipe)
    found = text_config_from_hf(folder / "config.json")
    for name in CHECKED_FIELDS:
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


def _is_local_location(location: str) -> bool:
    return not location.startswith("pipe:") and urlparse(location).scheme == ""


def _check_data_io(data: DictConfig) -> None:
    """The data source, cache and bad-data options (docs/shards.md)."""
    choices = {"mode": ("indexed", "stream"), "on_error": ("raise", "skip"), "verify": ("size", "sha256", "none")}
    for key, allowed in choices.items():
        if data[key] not in allowed:
            _fail(f"data.{key}", f"must be one of {allowed}, got {data[key]!r}")
    if not 0 <= data.max_skip_fraction < 1:
        _fail("data.max_skip_fraction", f"must be in [0, 1), got {data.max_skip_fraction}")
    if data.cache_limit_gb is not None and data.cache_limit_gb <= 0:
        _fail("data.cache_limit_gb", f"must be > 0 (or null for no bound), got {data.cache_limit_gb}")
    if data.shuffle_buffer < 1:
        _fail("data.shuffle_buffer", f"must be >= 1, got {data.shuffle_buffer}")
    if data.mode == "stream" and data.cache_decoded:
        _fail("data.cache_decoded", "does not apply to data.mode=stream (nothing is read twice)")
    for i, location in enumerate(data.dirs):
        if location.startswith("pipe:") and "{name}" not in location:
            _fail(f"data.dirs[{i}]", f"{location!r}: a pipe: location needs {{name}} where the file name goes")


ACCELERATORS = ("auto", "cpu", "gpu", "cuda", "mps")
PRECISIONS = ("64-true", "32-true", "bf16-mixed", "bf16-true", "16-mixed", "16-true", "64", "32", "16", "bf16")
MAX_TIME = re.compile(r"\d+:\d{2}:\d{2}:\d{2}")


def _check_batch_limit(key: str, value) -> None:
    if value is None:
        return
    if isinstance(value, bool) or value < 0 or (isinstance(value, float) and value > 1):
        _fail(key, f"an int >= 0 (batches) or a float in [0, 1] (a fraction), got {value}")


def _check_devices(devices) -> None:
    if isinstance(devices, int):
        if devices < 1 and devices != -1:
            _fail("trainer.devices", f"a device count >= 1, -1 (all) or 'auto', got {devices}")
        return
    text = str(devices).strip()
    items = [item.strip() for item in text.split(",") if item.strip()]
    if text != "auto" and not (items and all(item.lstrip("-").isdigit() for item in items)):
        _fail("trainer.devices", f"a device count, a list of indices ('0,1') or 'auto', got {devices!r}")
    if len(items) == 1 and items[0].lstrip("-").isdigit() and int(items[0]) < 1 and int(items[0]) != -1:
        _fail("trainer.devices", f"a device count >= 1, -1 (all) or 'auto', got {devices!r}")


def _check_hardware(accelerator: str) -> None:
    import torch

    if accelerator in ("gpu", "cuda") and not torch.cuda.is_available():
        _fail("trainer.accelerator", f"{accelerator!r}, but this machine has no CUDA GPU (use cpu or auto)")
    if accelerator == "mps" and not torch.backends.mps.is_available():
        _fail("trainer.accelerator", "'mps', but MPS is not available on this machine (use cpu or auto)")


def _check_trainer(recipe: DictConfig, check_files: bool) -> None:
    """Lightning's settings, checked before any work (Lightning itself finds some only after the model is built,
    or after the last step)."""
    trainer = recipe.trainer
    if trainer.accelerator not in ACCELERATORS:
        _fail("trainer.accelerator", f"must be one of {ACCELERATORS}, got {trainer.accelerator!r}")
    if check_files:
        _check_hardware(trainer.accelerator)
    _check_devices(trainer.devices)
    if str(trainer.precision) not in PRECISIONS:
        _fail("trainer.precision", f"must be one of {PRECISIONS}, got {trainer.precision!r}")
    for key, minimum in (
        ("num_nodes", 1),
        ("accumulate_grad_batches", 1),
        ("log_every_n_steps", 1),
        ("num_sanity_val_steps", -1),
    ):
        if trainer[key] < minimum:
            _fail(f"trainer.{key}", f"must be >= {minimum}, got {trainer[key]}")
    if trainer.max_steps < -1 or trainer.max_steps == 0:
        _fail("trainer.max_steps", f"must be >= 1 (or -1: use trainer.max_epochs), got {trainer.max_steps}")
    if trainer.max_epochs is not None and (trainer.max_epochs < -1 or trainer.max_epochs == 0):
        _fail("trainer.max_epochs", f"must be >= 1 (or -1 / null: use trainer.max_steps), got {trainer.max_epochs}")
    if trainer.max_time is not None and not MAX_TIME.fullmatch(str(trainer.max_time)):
        _fail("trainer.max_time", f"'DD:HH:MM:SS' (e.g. 00:12:00:00), got {trainer.max_time!r}")
    if trainer.check_val_every_n_epoch is not None and trainer.check_val_every_n_epoch < 1:
        _fail("trainer.check_val_every_n_epoch", f"must be >= 1 or null, got {trainer.check_val_every_n_epoch}")
    interval = trainer.val_check_interval
    if interval is not None and (interval <= 0 or (isinstance(interval, float) and interval > 1)):
        _fail("trainer.val_check_interval", f"an int >= 1 (batches) or a float in (0, 1], got {interval}")
    if trainer.gradient_clip_val is not None and trainer.gradient_clip_val < 0:
        _fail("trainer.gradient_clip_val", f"must be >= 0, got {trainer.gradient_clip_val}")
    for split in ("train", "val", "test"):
        _check_batch_limit(f"trainer.limit_{split}_batches", trainer[f"limit_{split}_batches"])


def _check_optim(optim: DictConfig) -> None:
    if len(optim.betas) != 2 or not all(0 <= beta < 1 for beta in optim.betas):
        _fail("optim.betas", f"two values in [0, 1) (AdamW's beta1, beta2), got {list(optim.betas)}")
    if optim.eps <= 0:
        _fail("optim.eps", f"must be > 0, got {optim.eps}")
    if optim.poly_power < 0:
        _fail("optim.poly_power", f"must be >= 0 (0: a constant rate; the paper's 0.9), got {optim.poly_power}")
    if optim.dice_smooth < 0:
        _fail("optim.dice_smooth", f"must be >= 0, got {optim.dice_smooth}")
    if any(weight < 0 for weight in optim.class_weights):
        _fail("optim.class_weights", f"must be >= 0, got {list(optim.class_weights)}")


def _check_checkpoint(checkpoint: DictConfig) -> None:
    if checkpoint.mode not in ("max", "min"):
        _fail("checkpoint.mode", f"must be 'max' or 'min', got {checkpoint.mode!r}")
    if checkpoint.save_top_k < -1:
        _fail("checkpoint.save_top_k", f"must be >= 0, or -1 (keep every checkpoint), got {checkpoint.save_top_k}")
    if not checkpoint.save_last:
        _fail("checkpoint.save_last", "must be true: interruptions and failures save last.ckpt, resumes read it")
    if not checkpoint.monitor:
        _fail("checkpoint.monitor", "a logged metric is needed (the official selection: val/oIoU)")


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
    _check_data_io(data)
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
    if recipe.init.weights and recipe.init.backbone:
        _fail("init.backbone", "init.weights already holds the backbone; set only one of the two")
    _check_trainer(recipe, check_files)
    _check_optim(optim)
    _check_checkpoint(recipe.checkpoint)
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
            if _is_local_location(folder) and "{" not in folder and not (Path(folder) / "index.json").is_file():
                _fail(
                    f"data.dirs[{i}]",
                    f"{folder} holds no shard dataset (index.json); build one with `rsam data "
                    "...` (the demo: `rsam data demo`)",
                )
        if recipe.init.text_encoder:
            _check_text_init(recipe, cfg)
