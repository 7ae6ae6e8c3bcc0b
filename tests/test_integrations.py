"""stnviz.integrations with the real packages, offline: TensorBoard event files read back with
TensorBoard's own reader, MLflow runs with MLflow's client, W&B offline runs from their .wandb
file; a Lightning Trainer with the callback and each logger; DDP with 2 CPU processes through
Lightning and through torchrun."""

import io
import json
import os
import struct
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
import pytest
import torch
from PIL import Image

import stnviz
from stnviz.animate import ProgressRecorder
from stnviz.integrations.loggers import MLflow, TensorBoard, Wandb, log_progress, log_progress_video

REPO = Path(__file__).resolve().parents[1]
FRAMEWORKS = ("lightning", "tensorboard", "torch.utils.tensorboard", "mlflow", "wandb")
#: DDP between 2 CPU processes (gloo) is what these tests are about, whatever the suite's device.
DDP_DEVICE = "cpu"


# --------------------------------------------------------------------------- readers


def _tensorboard(log_dir: Path):
    from tensorboard.backend.event_processing import event_accumulator as ea

    acc = ea.EventAccumulator(str(log_dir), size_guidance={ea.IMAGES: 0, ea.SCALARS: 0})
    acc.Reload()
    return acc


def _gif_frames(encoded: bytes) -> int:
    assert encoded[:6] == b"GIF89a"
    with Image.open(io.BytesIO(encoded)) as gif:
        return gif.n_frames


def _wandb_records(path: Path) -> list:
    """The records of a ``.wandb`` file (a LevelDB-style log: a 7-byte header, then 32 KiB blocks of
    records, each ``crc32, length, type`` and a chunk of a ``wandb_internal_pb2.Record``)."""
    from wandb.proto import wandb_internal_pb2 as pb

    data, pos, chunk, records = path.read_bytes(), 7, b"", []
    block = 32768
    while pos + 7 <= len(data):
        left = block - pos % block
        if left < 7:  # a block's tail too short for a header is padding
            pos += left
            continue
        _, length, kind = struct.unpack("<IHB", data[pos:pos + 7])
        pos += 7
        if pos + length > len(data):  # still being written
            break
        chunk += data[pos:pos + length]
        pos += length
        if kind in (1, 4):  # a full record, or the last chunk of one
            record = pb.Record()
            record.ParseFromString(chunk)
            records.append(record)
            chunk = b""
    return records


def _wandb_history(run_dir: Path, wait: float = 30) -> list[dict]:
    """The history rows of a finished offline W&B run. W&B's service writes the file after
    ``finish()`` returns (seen: only the header at first), so this waits for the run's exit record."""
    (path,) = run_dir.glob("run-*.wandb")
    deadline = time.monotonic() + wait
    records = _wandb_records(path)
    while not any(r.WhichOneof("record_type") == "exit" for r in records):
        assert time.monotonic() < deadline, f"{path} holds no exit record after {wait} s"
        time.sleep(0.2)
        records = _wandb_records(path)
    return [{i.key or "/".join(i.nested_key): json.loads(i.value_json) for i in r.history.item}
            for r in records if r.WhichOneof("record_type") == "history"]


# --------------------------------------------------------------------------- shared


@pytest.fixture(scope="module")
def probe():
    return stnviz.data.sample("mnist").get(torch.arange(4))


@pytest.fixture
def recorder(device, probe):
    """Two snapshots (steps 0 and 10) of the trained tutorial net."""
    model = stnviz.load_pretrained("stn_tutorial.mnist", device=device)
    rec = ProgressRecorder(probe.images, probe.labels)
    rec.record(model, step=0)
    rec.record(model, step=10, train_loss=0.25)
    return rec


FRAME = {"tile": 32}


def test_importing_loads_no_framework():
    code = ("import sys, stnviz, stnviz.integrations, stnviz.integrations.loggers; "
            "from stnviz.integrations import TensorBoard, LoggingCallback; "
            f"print([m for m in {FRAMEWORKS!r} if m in sys.modules])")
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=120, check=True)
    assert out.stdout.strip() == "[]"


def test_a_missing_package_names_its_extra(monkeypatch, recorder):
    monkeypatch.setitem(sys.modules, "mlflow", None)  # as if not installed
    with pytest.raises(ImportError, match=r"pip install 'stnviz\[mlflow\]'"):
        log_progress(recorder, [MLflow(tracking_uri="file:unused")], step=10)


def test_bad_pictures_and_loggers_are_refused(tmp_path, recorder):
    tb = TensorBoard(tmp_path)
    with pytest.raises(ValueError, match=r"\(3, H, W\) uint8, got shape \(8, 8, 3\) uint8"):
        tb.log_image("x", np.zeros((8, 8, 3), np.uint8), 0)
    with pytest.raises(ValueError, match=r"\(T, 3, H, W\) uint8 with T >= 1, got shape \(2, 3, 8, 8\) float32"):
        tb.log_video("x", np.zeros((2, 3, 8, 8), np.float32), 4, 0)
    with pytest.raises(TypeError, match="loggers must have log_scalars.*got str"):
        stnviz.integrations.LoggingCallback(recorder, ["runs/a"])
    with pytest.raises(ValueError, match="needs a log_dir or a writer"):
        TensorBoard()


# --------------------------------------------------------------------------- each logger


def test_tensorboard_reads_back(tmp_path, recorder):
    tb = TensorBoard(tmp_path)
    log_progress(recorder, [tb], step=10, frame=FRAME)
    log_progress_video(recorder, [tb], step=10, fps=4, frame=FRAME)
    tb.close()
    acc = _tensorboard(tmp_path)
    tags = acc.Tags()
    assert {"stn/area", "stn/accuracy", "stn/train_loss", "stn/theta_0"} <= set(tags["scalars"])
    assert [(e.step, e.value) for e in acc.Scalars("stn/train_loss")] == [(10, pytest.approx(0.25))]
    assert acc.Scalars("stn/area")[0].value == pytest.approx(recorder.latest()["area"], rel=1e-5)
    (image,) = acc.Images("stn/regions")
    _, h, w = recorder.image(**FRAME).shape
    assert (image.step, image.height, image.width) == (10, h, w)
    (video,) = acc.Images("stn/progress")
    assert _gif_frames(video.encoded_image_string) == 2  # one frame per snapshot


def test_mlflow_reads_back(tmp_path, monkeypatch, recorder):
    from mlflow import MlflowClient

    monkeypatch.setenv("MLFLOW_ALLOW_FILE_STORE", "true")  # MLflow 3: the file store is opt-in
    uri = f"file:{tmp_path / 'mlruns'}"
    ml = MLflow(tracking_uri=uri, experiment="probe")
    log_progress(recorder, [ml], step=10, frame=FRAME)
    log_progress_video(recorder, [ml], step=10, fps=4, frame=FRAME)
    ml.close()
    client = MlflowClient(uri)
    run = client.get_run(ml.run_id)
    assert run.info.status == "FINISHED"
    assert run.data.metrics["stn/train_loss"] == pytest.approx(0.25)
    assert [m.step for m in client.get_metric_history(ml.run_id, "stn/area")] == [10]
    gifs = [f.path for f in client.list_artifacts(ml.run_id, "stn/progress")]
    assert gifs == ["stn/progress/step_000010.gif"]
    gif = Path(client.download_artifacts(ml.run_id, gifs[0], str(tmp_path)))
    assert _gif_frames(gif.read_bytes()) == 2
    images = [f.path for f in client.list_artifacts(ml.run_id, "images")]
    assert any("regions" in p and "step+10" in p and p.endswith(".png") for p in images), images


def test_wandb_offline_reads_back(tmp_path, monkeypatch, recorder):
    monkeypatch.setenv("WANDB_MODE", "offline")  # also for W&B's process-wide settings, made once
    wb = Wandb(mode="offline", dir=str(tmp_path), project="stnviz-test")
    log_progress(recorder, [wb], step=10, frame=FRAME)
    log_progress_video(recorder, [wb], step=10, fps=4, frame=FRAME)
    run_dir = Path(wb.run.dir).parent
    wb.close()
    rows = _wandb_history(run_dir)
    scalars = next(r for r in rows if "stn/area" in r)
    assert scalars["global_step"] == 10 and scalars["stn/train_loss"] == pytest.approx(0.25)
    image = next(r for r in rows if "stn/regions/path" in r)
    assert image["stn/regions/width"] == recorder.image(**FRAME).shape[2]
    video = next(r for r in rows if "stn/progress/path" in r)
    assert _gif_frames((run_dir / "files" / video["stn/progress/path"]).read_bytes()) == 2


def test_fit_logs_through_the_callback(tmp_path, device, probe):
    from stnviz.integrations import LoggingCallback

    torch.manual_seed(0)
    model = stnviz.get_model("stn_tutorial", device=device)
    recorder = ProgressRecorder(probe.images, probe.labels, every=2)
    logging = LoggingCallback(recorder, [TensorBoard(tmp_path)], frame=FRAME)
    digits = stnviz.data.sample("mnist").subset(torch.arange(64))
    stnviz.fit(model, digits, epochs=1, batch_size=16, device=device, progress=False, callbacks=[logging])
    acc = _tensorboard(tmp_path)
    assert [e.step for e in acc.Scalars("stn/area")] == [0, 2, 4]
    assert [e.step for e in acc.Images("stn/regions")] == [0, 2, 4]
    (video,) = acc.Images("stn/progress")
    assert video.step == 4 and _gif_frames(video.encoded_image_string) == 3


# --------------------------------------------------------------------------- Lightning

LIGHTNING_MODULE = '''
import lightning.pytorch as pl
import torch
import stnviz


class Digits(pl.LightningModule):
    """The tutorial's STN classifier as a LightningModule."""

    def __init__(self, device):
        super().__init__()
        self.net = stnviz.get_model("stn_tutorial", device=device)

    def forward(self, x):
        return self.net(x)

    def training_step(self, batch, batch_idx):
        images, labels = batch
        loss = torch.nn.functional.cross_entropy(self(images), labels)
        self.log("train_loss", loss)
        return loss

    def configure_optimizers(self):
        return torch.optim.SGD(self.parameters(), lr=0.05)


def loader(n=64, batch_size=16):
    digits = stnviz.data.sample("mnist").get(torch.arange(n))
    return torch.utils.data.DataLoader(list(zip(digits.images, digits.labels)), batch_size=batch_size)
'''


@pytest.fixture(scope="module")
def lightning_module(tmp_path_factory):
    folder = tmp_path_factory.mktemp("lightning_module")
    (folder / "digits_module.py").write_text(LIGHTNING_MODULE)
    sys.path.insert(0, str(folder))
    try:
        import digits_module

        yield digits_module, folder
    finally:
        sys.path.remove(str(folder))
        sys.modules.pop("digits_module", None)


@pytest.mark.slow
def test_lightning_logs_to_every_logger(tmp_path, monkeypatch, device, probe, lightning_module):
    import lightning.pytorch as pl
    import wandb
    from lightning.pytorch.loggers import CSVLogger, MLFlowLogger, TensorBoardLogger, WandbLogger
    from mlflow import MlflowClient

    from stnviz.integrations.lightning import STNCallback

    monkeypatch.setenv("MLFLOW_ALLOW_FILE_STORE", "true")
    monkeypatch.setenv("WANDB_MODE", "offline")  # restored after: WandbLogger(offline=True) sets it for good
    module, _ = lightning_module
    uri = f"file:{tmp_path / 'mlruns'}"
    tensorboard = TensorBoardLogger(tmp_path, name="tb")
    loggers = [tensorboard, MLFlowLogger(tracking_uri=uri), WandbLogger(save_dir=str(tmp_path), offline=True),
               CSVLogger(tmp_path, name="csv")]
    stn = STNCallback(probe.images, probe.labels, every_n_steps=2, frame=FRAME)
    trainer = pl.Trainer(max_steps=4, accelerator="gpu" if device.type == "cuda" else "cpu", devices=1,
                         logger=loggers, callbacks=[stn], log_every_n_steps=1, enable_progress_bar=False,
                         enable_model_summary=False, enable_checkpointing=False)
    torch.manual_seed(0)
    trainer.fit(module.Digits(device), module.loader())
    wandb_dir = Path(loggers[2].experiment.dir).parent
    wandb.finish()

    assert stn.recorder.to_frame()["step"].tolist() == [0, 2, 4]
    assert stn.recorder.snapshots[-1].train_loss > 0  # the loss training_step returned
    acc = _tensorboard(tensorboard.log_dir)
    assert [e.step for e in acc.Scalars("stn/area")] == [0, 2, 4]
    assert "train_loss" in acc.Tags()["scalars"]  # the module's own logging goes on beside
    assert [e.step for e in acc.Images("stn/regions")] == [0, 2, 4]
    assert _gif_frames(acc.Images("stn/progress")[0].encoded_image_string) == 3
    assert stn.gif_path == Path(tensorboard.log_dir) / "stn_progress.gif" and stn.gif_path.is_file()

    client = MlflowClient(uri)
    run_id = loggers[1].run_id
    assert [m.step for m in client.get_metric_history(run_id, "stn/area")] == [0, 2, 4]
    assert [f.path for f in client.list_artifacts(run_id, "stn/progress")] == ["stn/progress/step_000004.gif"]

    rows = _wandb_history(wandb_dir)
    assert [r["trainer/global_step"] for r in rows if "stn/area" in r] == [0, 2, 4]
    assert any("stn/progress/path" in r for r in rows)

    csv = (Path(loggers[3].log_dir) / "metrics.csv").read_text()
    assert "stn/area" in csv.splitlines()[0]


# --------------------------------------------------------------------------- many processes


def _run_two_processes(cmd: list[str], cwd: Path) -> None:
    env = {**os.environ, "OMP_NUM_THREADS": "1", "PYTHONPATH": os.pathsep.join([str(REPO), str(cwd)])}
    proc = subprocess.run(cmd, cwd=cwd, env=env, capture_output=True, text=True, timeout=240)
    assert proc.returncode == 0, proc.stdout[-3000:] + proc.stderr[-3000:]


def _per_rank(folder: Path) -> dict[int, dict]:
    return {int(p.stem.split("_")[1]): json.loads(p.read_text()) for p in folder.glob("rank_*.json")}


LIGHTNING_DDP = f'''
import json, os, sys
import lightning.pytorch as pl
import torch
import stnviz
from lightning.pytorch.loggers import TensorBoardLogger
from stnviz.integrations.lightning import STNCallback
from digits_module import Digits, loader

torch.manual_seed(0)
probe = stnviz.data.sample("mnist").get(torch.arange(4))
stn = STNCallback(probe.images, probe.labels, every_n_steps=2, frame={{"tile": 32}})
trainer = pl.Trainer(strategy="ddp", accelerator="cpu", devices=2, max_steps=4, callbacks=[stn],
                     logger=TensorBoardLogger("logs", name="ddp"), enable_progress_bar=False,
                     enable_model_summary=False, enable_checkpointing=False)
trainer.fit(Digits({DDP_DEVICE!r}), loader(n=128))
with open(f"rank_{{trainer.global_rank}}.json", "w") as f:
    json.dump({{"steps": [s.step for s in stn.recorder.snapshots], "world": trainer.world_size,
               "gif": str(stn.gif_path) if stn.gif_path else None}}, f)
'''


@pytest.mark.slow
def test_lightning_ddp_records_on_rank_zero(tmp_path, lightning_module):
    (tmp_path / "train.py").write_text(LIGHTNING_DDP)
    (tmp_path / "digits_module.py").write_text(LIGHTNING_MODULE)
    _run_two_processes([sys.executable, "train.py"], tmp_path)
    ranks = _per_rank(tmp_path)
    assert sorted(ranks) == [0, 1] and ranks[0]["world"] == 2
    assert ranks[0]["steps"] == [0, 2, 4] and ranks[1]["steps"] == []  # rank 1 only trains
    assert ranks[0]["gif"] and (tmp_path / ranks[0]["gif"]).is_file() and ranks[1]["gif"] is None
    (version,) = (tmp_path / "logs" / "ddp").iterdir()
    acc = _tensorboard(version)
    assert [e.step for e in acc.Scalars("stn/area")] == [0, 2, 4]


TORCHRUN_FIT = f'''
import json, torch, torch.distributed as dist
import stnviz
from stnviz.animate import ProgressRecorder
from stnviz.integrations import LoggingCallback, TensorBoard

torch.manual_seed(0)
model = stnviz.get_model("stn_tutorial", device={DDP_DEVICE!r})
digits = stnviz.data.sample("mnist")
probe = digits.get(torch.arange(4))
recorder = ProgressRecorder(probe.images, probe.labels, every=2)
logging = LoggingCallback(recorder, [TensorBoard("logs")], frame={{"tile": 32}})
state = {{}}


class Rank(stnviz.train.Callback):
    def on_train_end(self, s):
        state.update(rank=s.rank, world=s.world_size, step=s.step)


stnviz.fit(model, digits.subset(torch.arange(128)), epochs=1, batch_size=16, device={DDP_DEVICE!r}, progress=False,
           callbacks=[logging, Rank()])
with open(f"rank_{{state['rank']}}.json", "w") as f:
    json.dump({{**state, "steps": [s.step for s in recorder.snapshots]}}, f)
'''


@pytest.mark.slow
def test_torchrun_fit_records_on_rank_zero(tmp_path):
    (tmp_path / "train.py").write_text(TORCHRUN_FIT)
    _run_two_processes([sys.executable, "-m", "torch.distributed.run", "--standalone", "--nproc_per_node=2",
                        "train.py"], tmp_path)
    ranks = _per_rank(tmp_path)
    assert sorted(ranks) == [0, 1] and ranks[0]["world"] == 2
    assert ranks[0]["step"] == 4  # 128 images, 16 a batch, halved between 2 ranks
    assert ranks[0]["steps"] == [0, 2, 4] and ranks[1]["steps"] == []
    assert len(list((tmp_path / "logs").glob("events.out.tfevents.*"))) == 1  # rank 1 opened no writer
    assert [e.step for e in _tensorboard(tmp_path / "logs").Scalars("stn/area")] == [0, 2, 4]


# --------------------------------------------------------------------------- DDP-wrapped models


@pytest.fixture
def process_group(tmp_path):
    import torch.distributed as dist

    dist.init_process_group("gloo", init_method=f"file://{tmp_path / 'group'}", rank=0, world_size=1)
    try:
        yield
    finally:
        dist.destroy_process_group()


def test_capture_and_recorder_unwrap_ddp(process_group, device, probe):
    from torch.nn.parallel import DistributedDataParallel

    model = stnviz.load_pretrained("stn_tutorial.mnist", device=device)
    ddp = DistributedDataParallel(model, device_ids=[device.index] if device.type == "cuda" else None)
    with torch.no_grad(), stnviz.capture(ddp) as rec:
        ddp(probe.images.to(device))
    assert rec.keys() == ["transformer"] and rec.last().module == "transformer"
    recorder = ProgressRecorder(probe.images, probe.labels)
    recorder.record(ddp, step=0)  # runs ddp.module: no collective with ranks that do not probe
    plain = ProgressRecorder(probe.images, probe.labels)
    plain.record(model, step=0)
    assert torch.allclose(recorder.snapshots[0].params, plain.snapshots[0].params, atol=1e-6)
