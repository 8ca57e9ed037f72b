"""Shards read through wids/webdataset from local folders, HTTP (a real ``http.server``), S3 (moto's server) and
``pipe:`` commands; the shard cache; the start-up check; bad data at training time in both modes.

References: the standard library's ``tarfile`` (``helpers.shard_utils.read_samples``), ``hashlib``, the server's own
request log, and the samplers' index orders.
"""

from __future__ import annotations

import hashlib
import io
import json
import multiprocessing
import shutil
import subprocess
import sys
import tarfile
from collections import Counter
from pathlib import Path

import numpy as np
import pytest
import torch
from helpers.lit_runs import tiny_setup
from helpers.servers import S3_ENV, http_server, s3_server, upload_folder
from helpers.shard_utils import HELPERS, read_samples, subprocess_env
from PIL import Image

from datamodules.remotesam_shards import RemoteSAMShardDataModule
from rsam.data.demo import default_demo_dir
from rsam.data.records import encode_mask_png
from rsam.data.samplers import ResampledShardSampler
from rsam.data.shards import sha256_file, split_index_name, write_json_atomic, write_tar
from rsam.data.sources import CorruptShardError, ShardCache, ShardUnavailableError, gather_shards

MODES = ("indexed", "stream")
TRAIN = [6, 6, 6, 6]  # syn-00000000 .. syn-00000023
VAL = [5, 1, 7]  # syn-00000024 .. syn-00000036
VAL_KEYS = {f"syn-{n:08d}" for n in range(24, 37)}
BAD_KEY = "syn-00000008"  # position 2 of train-000001.tar, train index 8


@pytest.fixture(scope="module")
def syn(tmp_path_factory):
    folder = tmp_path_factory.mktemp("syn") / "data"
    from rsam.data.synthetic import write_synthetic_dataset

    write_synthetic_dataset(folder, {"train": TRAIN, "val": VAL}, image_size=16)
    return folder


@pytest.fixture(scope="module")
def http(syn, tmp_path_factory):
    with http_server(syn, tmp_path_factory.mktemp("http") / "requests.log") as server:
        yield server


def datamodule(location, tmp_path, **options):
    kwargs = dict(
        image_size=16,
        batch_size=4,
        num_workers=0,
        samples_per_rank=12,
        seed=1,
        shuffle_buffer=8,
        cache_dir=str(tmp_path / "cache"),
    )
    kwargs.update(options)
    dm = RemoteSAMShardDataModule(str(location), **kwargs)
    dm.setup("fit")
    return dm


def val_rows(dm) -> list[tuple[str, bool]]:
    return [(m["key"], v) for b in dm.val_dataloader() for m, v in zip(b["meta"], b["valid"].tolist())]


def train_pass(dm, after_first_batch=None) -> tuple[list[str], Counter]:
    keys, skipped = [], Counter()
    for number, batch in enumerate(dm.train_dataloader()):
        keys += [m["key"] for m in batch["meta"]]
        skipped.update(batch["skipped"])
        if number == 0 and after_first_batch is not None:
            after_first_batch()
    return keys, skipped


# ------------------------------------------------------------------------------------------------ sources


def test_http_indexed_reads_like_local_and_downloads_each_shard_once(syn, http, tmp_path):
    local = datamodule(syn, tmp_path / "a")
    remote = datamodule(http.url, tmp_path / "b", num_workers=2)
    before = {name: http.gets(name) for name in ("val-000000.tar", "val-000002.tar", "train-000003.tar")}
    rows = val_rows(remote)
    assert rows == val_rows(local) and sorted(k for k, ok in rows if ok) == sorted(VAL_KEYS)
    assert train_pass(remote)[0] == train_pass(local)[0]  # the indexed order depends on (seed, epoch, rank) only
    for name in before:  # two workers read every shard, each downloaded once
        assert http.gets(name) == before[name] + 1
    reference = read_samples(syn)
    batch = next(iter(remote.val_dataloader()))
    assert batch["meta"][0]["text"] == json.loads(reference["syn-00000024"]["json"])["text"]
    cached = sorted((tmp_path / "b" / "cache").glob("*-val-*.tar"))
    assert [hashlib.sha256(p.read_bytes()).hexdigest() for p in cached] == [
        sha256_file(syn / p.name.split("-", 1)[1]) for p in cached
    ]
    again = datamodule(http.url, tmp_path / "b")  # same cache: nothing downloaded again
    val_rows(again)
    assert http.gets("val-000000.tar") == before["val-000000.tar"] + 1


def test_stream_order_is_reproducible_and_the_same_from_every_source(syn, http, tmp_path):
    def keys(location, epoch=0, rank=0):
        dm = datamodule(location, tmp_path, mode="stream", num_workers=2)
        loader = dm.train_dataloader()
        loader.dataset.set_epoch(epoch)
        loader.dataset.rank = rank
        return [m["key"] for b in loader for m in b["meta"]]

    local = keys(syn)
    assert len(local) == 12 and set(local) <= {f"syn-{n:08d}" for n in range(24)}
    piped = datamodule(f"pipe:cat {syn}/{{name}}", tmp_path / "pipe")  # indexed: pipe: downloads into the cache
    assert val_rows(piped) == val_rows(datamodule(syn, tmp_path))
    assert keys(http.url) == local == keys(f"file://{syn}") == keys(f"pipe:cat {syn}/{{name}}")
    assert keys(syn, epoch=1) != local and keys(syn, rank=1) != local and keys(syn) == local


def test_cache_bound_evicts_the_least_recently_used_shard(syn, http, tmp_path):
    shards = gather_shards(http.url, "train")
    limit = int(2.5 * shards[0]["filesize"])
    cache = ShardCache(tmp_path / "cache", limit)
    before = http.gets("train-000000.tar")
    for shard in shards:
        cache.fetch(shard)
    held = sorted(p.name.split("-", 1)[1] for p in (tmp_path / "cache").glob("*.tar"))
    assert held == ["train-000002.tar", "train-000003.tar"]
    assert sum(p.stat().st_size for p in (tmp_path / "cache").glob("*.tar")) <= limit
    cache.fetch(shards[0])  # evicted: fetched again
    assert http.gets("train-000000.tar") == before + 2


def _fetch(args):
    cache_dir, shard = args
    path = ShardCache(cache_dir).fetch(shard)
    return path, hashlib.sha256(Path(path).read_bytes()).hexdigest()


def test_concurrent_fetches_of_one_shard_download_it_once(syn, http, tmp_path):
    shard = gather_shards(http.url, "val")[2]
    before = http.gets("val-000002.tar")
    with multiprocessing.get_context("fork").Pool(4) as pool:
        results = pool.map(_fetch, [(str(tmp_path / "cache"), shard)] * 8)
    assert len({path for path, _ in results}) == 1 and {digest for _, digest in results} == {shard["sha256"]}
    assert http.gets("val-000002.tar") == before + 1
    assert not list((tmp_path / "cache").glob("*.tmp"))


@pytest.mark.parametrize("mode", MODES)
def test_fit_over_http(http, tmp_path, mode):
    import lightning.pytorch as pl

    class Model(pl.LightningModule):
        def __init__(self):
            super().__init__()
            self.weight = torch.nn.Parameter(torch.zeros(1))
            self.keys = []

        def training_step(self, batch, batch_idx):
            self.keys += [m["key"] for m in batch["meta"]]
            return (self.weight * batch["image"].mean()).sum()

        def validation_step(self, batch, batch_idx):
            self.keys += [m["key"] for m, ok in zip(batch["meta"], batch["valid"]) if ok]

        def configure_optimizers(self):
            return torch.optim.SGD(self.parameters(), lr=0.1)

    dm = RemoteSAMShardDataModule(
        http.url,
        image_size=16,
        batch_size=4,
        num_workers=2,
        samples_per_rank=8,
        mode=mode,
        cache_dir=str(tmp_path / "cache"),
    )
    model = Model()
    trainer = pl.Trainer(
        accelerator="cpu",
        max_epochs=1,
        logger=False,
        enable_checkpointing=False,
        enable_progress_bar=False,
        enable_model_summary=False,
        num_sanity_val_steps=0,
        default_root_dir=tmp_path,
    )
    trainer.fit(model, datamodule=dm)
    assert trainer.global_step == 2 and sorted(model.keys[8:]) == sorted(VAL_KEYS)
    assert set(model.keys[:8]) <= {f"syn-{n:08d}" for n in range(24)}


def test_two_process_ddp_streams_from_http_and_validates_every_sample_once(http, tmp_path):
    out = tmp_path / "ddp"
    result = subprocess.run(
        [sys.executable, str(HELPERS / "ddp_shards_check.py"), "lightning", str(out), http.url, "stream"],
        env=subprocess_env(),
        capture_output=True,
        text=True,
        timeout=300,
    )
    assert result.returncode == 0, result.stderr[-3000:]
    ranks = [json.loads((out / f"lightning-rank{r}.json").read_text()) for r in (0, 1)]
    per_rank = -(-len(VAL_KEYS) // 2)
    for epoch in range(2):
        seen = [tuple(item) for r in ranks for item in r["val"][epoch * per_rank : (epoch + 1) * per_rank]]
        assert sorted(key for key, ok in seen if ok) == sorted(VAL_KEYS)
        assert sum(1 for _, ok in seen if not ok) == 2 * per_rank - len(VAL_KEYS)
    assert len(ranks[0]["train"]) == len(ranks[1]["train"]) == 2 * 2  # 6 samples per rank and epoch, batch 3
    assert ranks[0]["train"] != ranks[1]["train"]


def test_fit_streams_from_s3_with_the_endpoint_from_the_environment(tmp_path):
    demo = default_demo_dir()
    if not (demo / "index.json").is_file():
        pytest.skip("the demo dataset is not built (rsam data demo)")
    recipe, _ = tiny_setup(tmp_path)
    with s3_server(tmp_path / "moto.log") as endpoint:
        upload_folder(endpoint, "rsam", "demo", demo)
        env = {**subprocess_env(), **S3_ENV, "AWS_ENDPOINT_URL": endpoint, "RSAM_CACHE_DIR": str(tmp_path / "cache")}
        command = [
            "fit",
            "--config",
            str(recipe),
            "--no-wandb",
            "data.dirs=[s3://rsam/demo]",
            "data.mode=stream",
            "trainer.max_steps=2",
            "trainer.limit_val_batches=2",
            "data.num_workers=1",
        ]
        result = subprocess.run(
            [sys.executable, "-m", "rsam.cli.main", *command], env=env, capture_output=True, text=True, timeout=300
        )
    assert result.returncode == 0, result.stderr[-3000:]
    summary = json.loads([line for line in result.stdout.splitlines() if line.startswith("{")][-1])
    assert summary["step"] == 2 and "val/oIoU" in summary["metrics"]
    assert "testing" not in recipe.read_text()  # credentials come from the environment only


# ------------------------------------------------------------------------------------------------ start-up check


def copy_dataset(syn, tmp_path) -> Path:
    folder = tmp_path / "data"
    shutil.copytree(syn, folder)
    return folder


@pytest.mark.parametrize("mode", MODES)
def test_missing_shard_is_found_at_start_not_when_first_drawn(syn, tmp_path, mode):
    import lightning.pytorch as pl

    folder = copy_dataset(syn, tmp_path)
    (folder / "train-000002.tar").unlink()

    class Recorder(pl.LightningModule):
        def __init__(self):
            super().__init__()
            self.weight = torch.nn.Parameter(torch.zeros(1))
            self.steps = 0

        def training_step(self, batch, batch_idx):
            self.steps += 1
            return (self.weight * batch["image"].mean()).sum()

        def configure_optimizers(self):
            return torch.optim.SGD(self.parameters(), lr=0.1)

    dm = RemoteSAMShardDataModule(str(folder), image_size=16, batch_size=4, num_workers=0, mode=mode)
    model = Recorder()
    trainer = pl.Trainer(
        accelerator="cpu",
        max_steps=3,
        logger=False,
        enable_checkpointing=False,
        enable_progress_bar=False,
        enable_model_summary=False,
        default_root_dir=tmp_path,
    )
    with pytest.raises(ShardUnavailableError, match="train-000002.tar: listed in the index but missing"):
        trainer.fit(model, datamodule=dm)
    assert model.steps == 0


def test_size_and_sha256_mismatches_are_refused_naming_the_shard(syn, tmp_path):
    grown = copy_dataset(syn, tmp_path / "grown")
    with open(grown / "val-000002.tar", "ab") as handle:
        handle.write(b"\0" * 512)
    with pytest.raises(CorruptShardError, match=r"val-000002.tar: \d+ bytes, the index says \d+"):
        datamodule(grown, tmp_path)
    changed = copy_dataset(syn, tmp_path / "changed")
    data = bytearray((changed / "val-000000.tar").read_bytes())
    data[600] ^= 0xFF  # same size, other bytes
    (changed / "val-000000.tar").write_bytes(bytes(data))
    datamodule(changed, tmp_path, verify="size")  # the cheap check cannot see it
    with pytest.raises(CorruptShardError, match="val-000000.tar: sha256 .* differs from the index"):
        datamodule(changed, tmp_path, verify="sha256")
    datamodule(grown, tmp_path, verify="none")
    missing = copy_dataset(syn, tmp_path / "missing")
    (missing / "val-000001.tar").unlink()
    with http_server(missing, tmp_path / "log") as server:  # over HTTP: a HEAD request per shard
        with pytest.raises(ShardUnavailableError, match="val-000001.tar"):
            datamodule(server.url, tmp_path)
    with http_server(changed, tmp_path / "log2") as server:  # a download is hashed before it enters the cache
        dataset = datamodule(server.url, tmp_path, verify="none").val_dataloader().dataset
        with pytest.raises(CorruptShardError, match="val-000000.tar: sha256 of the download differs"):
            dataset[0]
        assert not list((tmp_path / "cache").glob("*val-000000.tar"))


# ------------------------------------------------------------------------------------------------ bad data


def rewrite_shard(folder: Path, name: str, change) -> None:
    """Rewrite shard ``name`` with ``change(member name, bytes) -> bytes`` applied, and re-index it."""
    with tarfile.open(folder / name) as tar:
        members = [(m.name, tar.extractfile(m).read()) for m in tar.getmembers()]
    samples: dict[str, list] = {}
    for member, data in members:
        samples.setdefault(member.split(".")[0], []).append((member, change(member, data)))
    write_tar(folder / name, list(samples.values()))
    index = json.loads((folder / "index.json").read_text())
    for split in index["splits"].values():
        for shard in split["shards"]:
            if shard["name"] == name:
                shard.update(filesize=(folder / name).stat().st_size, sha256=sha256_file(folder / name))
                descriptor = json.loads((folder / split["wids_index"]).read_text())
                for entry in descriptor["shardlist"]:
                    if entry["url"] == name:
                        entry.update(filesize=shard["filesize"], sha256=shard["sha256"])
                write_json_atomic(folder / split["wids_index"], descriptor)
    write_json_atomic(folder / "index.json", index)
    assert split_index_name("train") == "train.index.json"


def bad_image(member, data):
    return b"not an image at all" if member == f"{BAD_KEY}.png" else data


def bad_mask(member, data):
    return encode_mask_png(np.ones((5, 7), dtype=bool)) if member == f"{BAD_KEY}.mask.png" else data


FAULTS = {
    "truncated": ("shard_truncated", r"train-000001.tar"),
    "image": ("bad_image", rf"train-000001.tar:{BAD_KEY}: cannot decode image"),
    "mask": ("bad_mask", rf"train-000001.tar:{BAD_KEY}: mask \(7, 5\) and image \(16, 16\) sizes differ"),
    "vanished": ("shard_unavailable", r"train-000002.tar"),
}


def make_fault(folder: Path, fault: str):
    """Damage ``folder``; returns a callback for faults that happen mid-epoch."""
    if fault == "truncated":
        path = folder / "train-000001.tar"
        path.write_bytes(path.read_bytes()[: path.stat().st_size // 2])
    elif fault == "image":
        rewrite_shard(folder, "train-000001.tar", bad_image)
    elif fault == "mask":
        rewrite_shard(folder, "train-000001.tar", bad_mask)
    else:  # after the first batch
        return (folder / "train-000002.tar").unlink
    return None


def seed_drawing_shard_1_first(mode: str) -> int:
    """A seed whose first training shard is train-000001.tar (the damaged one) and whose next three shard draws
    include train-000002.tar (the one that vanishes after the first batch), for the indexed sampler or the stream."""
    from rsam.data.streaming import _ShardDraw

    for seed in range(200):
        if mode == "indexed":
            order = list(ResampledShardSampler(TRAIN, 24, seed=seed, mix_shards=1, num_replicas=1, rank=0))
            draws = [order[i] // 6 for i in range(0, 24, 6)]
        else:
            stream = _ShardDraw(["0", "1", "2", "3"], TRAIN, [seed, 0, 0, 0])()
            draws = [int(next(stream)["url"]) for _ in range(4)]
        if draws[0] == 1 and 2 in draws[1:]:
            return seed
    raise AssertionError("no such seed")


@pytest.mark.parametrize("fault", list(FAULTS))
@pytest.mark.parametrize("mode", MODES)
def test_bad_data_raises_naming_the_shard_and_key(syn, tmp_path, mode, fault):
    folder = copy_dataset(syn, tmp_path)
    later = make_fault(folder, fault)
    dm = datamodule(
        folder,
        tmp_path,
        mode=mode,
        verify="none",
        samples_per_rank=24,
        mix_shards=1,
        shuffle_buffer=1,
        seed=seed_drawing_shard_1_first(mode),
    )
    with pytest.raises(CorruptShardError, match=FAULTS[fault][1]) as raised:
        train_pass(dm, later)
    assert raised.value.reason == FAULTS[fault][0]


@pytest.mark.parametrize("fault", list(FAULTS))
@pytest.mark.parametrize("mode", MODES)
def test_bad_data_is_skipped_counted_and_replaced(syn, tmp_path, mode, fault):
    folder = copy_dataset(syn, tmp_path)
    later = make_fault(folder, fault)
    seed = seed_drawing_shard_1_first(mode)
    dm = datamodule(
        folder,
        tmp_path,
        mode=mode,
        verify="none",
        samples_per_rank=24,
        mix_shards=1,
        shuffle_buffer=1,
        on_error="skip",
        max_skip_fraction=0.99,
        seed=seed,
    )
    keys, skipped = train_pass(dm, later)
    assert len(keys) == 24  # every slot filled: the rank's count does not change
    reason = FAULTS[fault][0]
    assert skipped[reason] > 0 and set(skipped) == {reason}
    assert BAD_KEY not in keys or fault in ("truncated", "vanished")
    if fault in ("image", "mask") and mode == "indexed":  # one skip per draw of the bad index (sampler order)
        sampler = ResampledShardSampler(TRAIN, 24, seed=seed, mix_shards=1, num_replicas=1, rank=0)
        assert skipped[reason] == list(sampler).count(8)


def test_skip_counts_reach_the_progress_bar_and_loggers_and_the_bound_stops_the_run(syn, tmp_path):
    import lightning.pytorch as pl
    from lightning.pytorch.loggers import CSVLogger

    folder = copy_dataset(syn, tmp_path)
    rewrite_shard(folder, "train-000001.tar", bad_image)

    class Model(pl.LightningModule):
        def __init__(self):
            super().__init__()
            self.weight = torch.nn.Parameter(torch.zeros(1))

        def training_step(self, batch, batch_idx):
            return (self.weight * batch["image"].mean()).sum()

        def configure_optimizers(self):
            return torch.optim.SGD(self.parameters(), lr=0.1)

    def fit(fraction):
        dm = RemoteSAMShardDataModule(
            str(folder),
            image_size=16,
            batch_size=4,
            num_workers=0,
            samples_per_rank=24,
            seed=1,
            mix_shards=1,
            on_error="skip",
            max_skip_fraction=fraction,
        )
        trainer = pl.Trainer(
            accelerator="cpu",
            max_epochs=1,
            limit_val_batches=0,
            logger=CSVLogger(tmp_path),
            enable_checkpointing=False,
            enable_progress_bar=True,
            enable_model_summary=False,
            log_every_n_steps=1,
            default_root_dir=tmp_path,
        )
        trainer.fit(Model(), datamodule=dm)
        return trainer

    drawn = list(ResampledShardSampler(TRAIN, 24, seed=1, mix_shards=1, num_replicas=1, rank=0)).count(8)
    assert drawn > 0
    trainer = fit(0.5)
    assert trainer.progress_bar_metrics["data/skipped"] == drawn
    assert trainer.logged_metrics["data/skipped_bad_image"] == drawn
    with pytest.raises(CorruptShardError, match=r"of this train epoch's 24 samples were bad, more than"):
        fit(0.0)


def test_skipped_eval_sample_becomes_an_invalid_row(syn, tmp_path):
    folder = copy_dataset(syn, tmp_path)
    rewrite_shard(folder, "val-000002.tar", lambda m, d: b"garbage" if m == "syn-00000031.png" else d)
    rows = val_rows(datamodule(folder, tmp_path, on_error="skip"))
    assert len(rows) == 13 and ("syn-00000031", True) not in rows
    assert sorted(k for k, ok in rows if ok) == sorted(VAL_KEYS - {"syn-00000031"})
    image = Image.open(io.BytesIO(read_samples(folder)["syn-00000030"]["png"]))
    assert image.size == (16, 16)


def test_stream_mid_epoch_resume_is_exact(syn, tmp_path):
    """Stopped after 1 of 3 batches of epoch 1, the resumed stream (2 workers) yields exactly what the full run saw."""
    import lightning.pytorch as pl

    class SaveAt(pl.Callback):
        def on_train_batch_end(self, trainer, *args):
            if trainer.global_step == 4:
                trainer.save_checkpoint(tmp_path / "mid.ckpt")

    class Recorder(pl.LightningModule):
        def __init__(self):
            super().__init__()
            self.weight = torch.nn.Parameter(torch.zeros(1))
            self.seen = []

        def training_step(self, batch, batch_idx):
            self.seen.append((self.current_epoch, batch_idx, [m["key"] for m in batch["meta"]]))
            return (self.weight * batch["image"].mean()).sum()

        def configure_optimizers(self):
            return torch.optim.SGD(self.parameters(), lr=0.1)

    def fit(ckpt_path=None):
        dm = RemoteSAMShardDataModule(
            str(syn),
            image_size=16,
            batch_size=2,
            num_workers=2,
            samples_per_rank=6,
            seed=11,
            mode="stream",
            shuffle_buffer=4,
        )
        model = Recorder()
        trainer = pl.Trainer(
            accelerator="cpu",
            max_steps=9,
            limit_val_batches=0,
            logger=False,
            enable_checkpointing=False,
            enable_progress_bar=False,
            enable_model_summary=False,
            default_root_dir=tmp_path,
            callbacks=[SaveAt()],
        )
        trainer.fit(model, datamodule=dm, ckpt_path=ckpt_path)
        return model.seen

    full = fit()  # 3 epochs of 3 batches; saves after the first batch of epoch 1
    assert [step[:2] for step in full[3:6]] == [(1, 0), (1, 1), (1, 2)]
    assert [keys for *_, keys in full[0:3]] != [keys for *_, keys in full[3:6]]  # the epoch changes the stream
    assert fit(str(tmp_path / "mid.ckpt")) == full[4:]


@pytest.mark.parametrize(
    ("override", "key"),
    [
        ("data.mode=fast", "data.mode"),
        ("data.on_error=ignore", "data.on_error"),
        ("data.verify=md5", "data.verify"),
        ("data.max_skip_fraction=1.5", "data.max_skip_fraction"),
        ("data.cache_limit_gb=0", "data.cache_limit_gb"),
        ("data.dirs=['pipe:cat /data/index.json']", "data.dirs[0]"),
    ],
)
def test_recipe_refuses_bad_data_options_naming_the_key(override, key):
    from rsam.recipes import RecipeError, load_recipe

    with pytest.raises(RecipeError, match=key.replace("[", r"\[").replace("]", r"\]")):
        load_recipe("demo", [override, "data.num_workers=0"], check_files=False)
    recipe = load_recipe("demo", ["data.dirs=[s3://bucket/rsam, 'http://host/{a,b}']"], check_files=True)
    assert list(recipe.data.dirs) == ["s3://bucket/rsam", "http://host/{a,b}"]  # remote: checked at setup


def test_brace_pattern_locations_expand_in_order(tmp_path):
    from rsam.data.synthetic import write_synthetic_dataset

    for part, name in enumerate(("a", "b")):
        write_synthetic_dataset(tmp_path / f"part-{part}", {"val": [2, 1]}, image_size=8, name=name)
    shards = gather_shards(str(tmp_path / "part-{0..1}"), "val")
    assert [Path(s["url"]).relative_to(tmp_path).as_posix() for s in shards] == [
        "part-0/val-000000.tar",
        "part-0/val-000001.tar",
        "part-1/val-000000.tar",
        "part-1/val-000001.tar",
    ]
    dm = RemoteSAMShardDataModule(str(tmp_path / "part-{0..1}"), image_size=8, batch_size=4, num_workers=0)
    dm.setup("validate")
    rows = val_rows(dm)
    assert [valid for _, valid in rows] == [True] * 6 and len({key for key, _ in rows}) == 3  # keys repeat per part
