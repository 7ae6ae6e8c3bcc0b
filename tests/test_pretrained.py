"""The shipped checkpoints: they load by name (editable install and wheel) and score above their
targets on the shipped real samples."""

import json
import os
import subprocess
import sys
import zipfile
from pathlib import Path

import pytest
import torch

import stnviz
from stnviz.analysis import distortion_residuals, stability_per_model, stability_per_track
from stnviz.data import DistortedMNIST, sample, sample_tracks
from stnviz.data.catalog import TEST_SEED
from stnviz.train import evaluate

REPO = Path(__file__).resolve().parents[1]
SHIPPED = sorted(p.stem for p in (REPO / "weights").glob("*.*.pt"))

# name -> (data built from the shipped samples, minimum accuracy). The targets are the issue's:
# >= 99.0% for the tutorial net on MNIST and for the GTSRB net on held-out tracks; <= 0.6% error
# for the ST-CNN on RTS MNIST. The samples are 1,000 digits / 600 frames, so one target is eased
# where the sample is too small to resolve it (noted beside it).
TARGETS = {
    "stn_tutorial.mnist": (lambda: sample("mnist"), 0.99),
    # 0.6% of 1,000 samples is 6 errors; the full 10,000-digit test score is in the checkpoint's meta
    "stn_cnn.mnist_rts": (lambda: DistortedMNIST(sample("mnist"), "rts", seed=TEST_SEED), 0.99),
    # the twin has no target of its own: 1.03% test error on 10,000 (in its meta), 98.0% on these
    # 1,000 digits (the standard error of a 1,000-digit estimate is about 0.3%); the floor leaves
    # five digits of margin for numerics on other CPUs
    "cnn.mnist_rts": (lambda: DistortedMNIST(sample("mnist"), "rts", seed=TEST_SEED), 0.975),
    "stn_gtsrb.gtsrb": (lambda: sample("gtsrb"), 0.99),
    "stn_gtsrb.gtsrb_loc": (lambda: sample("gtsrb"), 0.99),
    # the paper's R rows (FCN 2.1%, ST-FCN 1.2% error); here 2.52% and 1.67% on the 10,000 test digits
    "fcn.mnist_rotated": (lambda: DistortedMNIST(sample("mnist"), "rotated", seed=TEST_SEED), 0.96),
    "stn_fcn.mnist_rotated": (lambda: DistortedMNIST(sample("mnist"), "rotated", seed=TEST_SEED), 0.97),
    # the E rows (paper: ST-FCN TPS 2.4% error); here 1.89% and 1.08% on the 10,000 test digits
    "fcn.mnist_elastic": (lambda: DistortedMNIST(sample("mnist"), "elastic", seed=TEST_SEED), 0.97),
    "stn_fcn_tps.mnist_elastic": (lambda: DistortedMNIST(sample("mnist"), "elastic", seed=TEST_SEED), 0.975),
    "cnn_gtsrb.gtsrb": (lambda: sample("gtsrb"), 0.98),
    # the curriculum model (0.87% test error on 10,000): its transformer turns the digits upright
    "stn_cnn.mnist_rts_upright": (lambda: DistortedMNIST(sample("mnist"), "rts", seed=TEST_SEED), 0.98),
}

# tags that name a variant rather than a data set: tag -> the data set it was trained on
VARIANTS = {"gtsrb_loc": "gtsrb", "mnist_rts_upright": "mnist_rts"}


def test_expected_checkpoints_are_shipped():
    assert set(TARGETS) <= set(SHIPPED), f"missing: {set(TARGETS) - set(SHIPPED)}"
    assert set(SHIPPED) <= set(TARGETS), f"shipped without a target: {set(SHIPPED) - set(TARGETS)}"
    assert set(SHIPPED) <= set(stnviz.list_models(pretrained=True))


@pytest.mark.parametrize("name", SHIPPED)
class TestShipped:
    def test_small_with_metadata(self, name):
        path = REPO / "weights" / f"{name}.pt"
        assert path.stat().st_size < 10 * 2**20
        meta = stnviz.checkpoints.load_checkpoint(path)["meta"]
        assert meta["command"].startswith("python -m stnviz train") and f"--name {name}" in meta["command"]
        assert {"test_accuracy", "val_accuracy", "best_epoch"} <= set(meta["metrics"])
        tag = name.split(".")[1]
        assert meta["dataset"] == VARIANTS.get(tag, tag) and meta["epochs"] >= 1 and meta["seed"] is not None

    def test_in_the_current_format(self, name):
        """Issue 18/19: every shipped file carries a weights digest that verifies (how a flipped byte is
        caught; required on load), loads without a CheckpointWarning (no non-finite weights), and
        says ``family``, never its pre-release name ``transform``, in metadata and model arguments."""
        import inspect
        import warnings

        from stnviz import models
        from stnviz.checkpoints import CheckpointWarning, weights_digest

        path = REPO / "weights" / f"{name}.pt"
        with warnings.catch_warnings():
            warnings.simplefilter("error", CheckpointWarning)
            payload = stnviz.checkpoints.load_checkpoint(path)  # checks the stored digest
        assert payload["weights_sha256"] == weights_digest(payload["state_dict"])
        assert "family" in payload["meta"] and "transform" not in payload["meta"]
        builder = inspect.signature(getattr(models, payload["arch"])).parameters
        assert set(payload["model_args"]) <= set(builder), sorted(set(payload["model_args"]) - set(builder))
        if "family" in builder:
            assert payload["meta"]["family"] == payload["model_args"].get("family", builder["family"].default)

    def test_scores_on_shipped_samples(self, name, device):
        if name not in TARGETS:
            pytest.fail(f"{name} is shipped but has no target in TARGETS")
        make, minimum = TARGETS[name]
        model = stnviz.load_pretrained(name, device=device)
        result = evaluate(model, make())
        assert result["accuracy"] >= minimum, result


def test_gtsrb_loc_transformer_finds_the_sign(device):
    """Issue 13: the first transformer of stn_gtsrb.gtsrb_loc moves its region onto the annotated
    sign box (mean IoU on the 20 shipped tracks), clearly more than stn_gtsrb.gtsrb's and than the
    whole frame's; its recorded figures travel in the file."""
    tracks = sample_tracks()
    iou = {name: float(stability_per_model(stability_per_track(stnviz.load_pretrained(name, device=device), tracks),
                                           name)["iou"].iloc[0])
           for name in ("stn_gtsrb.gtsrb", "stn_gtsrb.gtsrb_loc")}
    boxes = torch.cat([t.boxes for t in tracks])
    whole_frame = float(((boxes[:, 2] - boxes[:, 0]) * (boxes[:, 3] - boxes[:, 1])).mean())  # box inside the frame
    assert iou["stn_gtsrb.gtsrb_loc"] >= 0.75, iou
    assert iou["stn_gtsrb.gtsrb_loc"] > iou["stn_gtsrb.gtsrb"] + 0.08 and iou["stn_gtsrb.gtsrb"] < whole_frame + 0.06, (iou, whole_frame)
    recorded = stnviz.load_pretrained("stn_gtsrb.gtsrb_loc", device=device).meta["transform_metrics"]
    assert recorded["shipped_tracks"]["iou"] == pytest.approx(iou["stn_gtsrb.gtsrb_loc"], abs=0.01)


def test_upright_transformer_undoes_the_rotation(device):
    """Issue 13: stn_cnn.mnist_rts_upright's transformer, not its classifier, undoes much of the
    RTS rotation (distortion_residuals on the 1,000 shipped test digits), where stn_cnn.mnist_rts's
    barely turns; the recorded figures (10,000 test digits) travel in the file."""
    digits = DistortedMNIST(sample("mnist"), "rts", seed=TEST_SEED)
    undone = {}
    for name in ("stn_cnn.mnist_rts", "stn_cnn.mnist_rts_upright"):
        table = distortion_residuals(stnviz.load_pretrained(name, device=device), digits).set_index("component")
        undone[name] = table["undone"].to_dict()
    new, old = undone["stn_cnn.mnist_rts_upright"], undone["stn_cnn.mnist_rts"]
    assert new["rotation (deg)"] >= 0.33 and old["rotation (deg)"] <= 0.15, undone
    assert new["log scale"] > old["log scale"] + 0.1 and new["translation x"] >= 0.8, undone
    recorded = stnviz.load_pretrained("stn_cnn.mnist_rts_upright", device=device).meta["transform_metrics"]["test"]
    assert recorded["undone"]["rotation (deg)"] == pytest.approx(0.4065, abs=1e-3) and recorded["n"] == 10000


def test_loads_from_an_installed_wheel(tmp_path, device):
    """Build the wheel, unpack it as site-packages would, and load every checkpoint from it."""
    dist = tmp_path / "dist"
    proc = subprocess.run(
        [sys.executable, "-m", "pip", "wheel", "--no-deps", "--no-build-isolation", "-q", "-w", str(dist), str(REPO)],
        capture_output=True, text=True, timeout=300,
    )
    assert proc.returncode == 0, proc.stderr[-2000:]
    wheel = next(dist.glob("stnviz-*.whl"))
    site = tmp_path / "site"
    with zipfile.ZipFile(wheel) as z:
        names = z.namelist()
        z.extractall(site)
    for name in SHIPPED:
        assert f"stnviz/weights/{name}.pt" in names
    code = (
        "import json, stnviz\n"
        "out = {'file': stnviz.__file__, 'models': {}}\n"
        "for n in stnviz.list_models(pretrained=True):\n"
        f"    m = stnviz.load_pretrained(n, device={str(device)!r})\n"
        "    out['models'][n] = m.meta['path']\n"
        "print(json.dumps(out))\n"
    )
    env = {k: v for k, v in os.environ.items() if k != "STNVIZ_CHECKPOINTS"}
    env["PYTHONPATH"] = str(site)
    run = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, cwd=tmp_path, env=env, timeout=300)
    assert run.returncode == 0, run.stderr[-2000:]
    out = json.loads(run.stdout.strip().splitlines()[-1])
    assert out["file"].startswith(str(site))
    assert sorted(out["models"]) == SHIPPED
    assert all(p.startswith(str(site)) for p in out["models"].values())
