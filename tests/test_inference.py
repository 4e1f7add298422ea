"""inference.py and the predictor: modes, window geometry and blending, flip symmetry, outputs,
failures and --gt evaluation."""

from __future__ import annotations

import itertools
import json
from pathlib import Path

import cv2
import numpy as np
import pytest
import torch

import inference
from models import U2Net
from tests.tiny_run import tiny_config
from utils.config import load_config
from utils.inference.predictor import PredictOptions, Predictor
from utils.inference.windows import blend_weights, window_grid, window_starts
from utils.io.checkpoint import save_checkpoint


@pytest.fixture(scope="module")
def lite() -> U2Net:
    torch.manual_seed(0)
    return U2Net("lite").eval()


class Constant(torch.nn.Module):
    """A stand-in model whose probability is ``value`` everywhere."""

    def __init__(self, value: float = 0.7) -> None:
        super().__init__()
        self.value = value

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return torch.full_like(x[:, :1], self.value)


class MeanColour(torch.nn.Module):
    """A cheap stand-in model: the sigmoid of the channel mean."""

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return torch.sigmoid(x.mean(1, keepdim=True))


def random_image(height: int, width: int, seed: int = 0) -> np.ndarray:
    rng = np.random.default_rng(seed)
    image = cv2.resize(rng.integers(0, 256, (8, 8, 3), dtype=np.uint8), (width, height))
    return np.clip(image + rng.integers(-20, 20, image.shape), 0, 255).astype(np.uint8)


def predict(model: torch.nn.Module, image: np.ndarray, **options) -> torch.Tensor:
    return Predictor(model, PredictOptions(**options)).predict_tensors([image])[0]


# -- window geometry -------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("length", "window", "stride"),
    [(1000, 128, 96), (517, 64, 64), (129, 128, 1), (500, 100, 30), (64, 64, 48), (40, 64, 48)],
)
def test_windows_cover_the_image_and_stay_inside(length, window, stride):
    starts = window_starts(length, min(window, length), min(stride, window, length))
    side = min(window, length)
    assert starts[0] == 0 and starts[-1] == length - side
    assert all(0 < b - a <= stride for a, b in itertools.pairwise(starts))
    covered = np.zeros(length, bool)
    for start in starts:
        covered[start : start + side] = True
    assert covered.all()


def test_window_grid_caps_the_window_at_the_image():
    size, corners = window_grid(50, 300, 128, 96)
    assert size == (50, 128)
    assert corners == [(0, 0), (0, 96), (0, 172)]


def test_stride_larger_than_the_window_is_refused():
    with pytest.raises(ValueError, match="larger than the window"):
        window_starts(100, 10, 11)
    with pytest.raises(ValueError, match="stride must be between"):
        PredictOptions(mode="sliding", window=64, stride=65)


@pytest.mark.parametrize("size", [(128, 128), (37, 90), (1, 5)])
def test_gaussian_weights_are_positive_symmetric_and_peak_at_one(size):
    weights = blend_weights(size)
    assert weights.shape == size and float(weights.max()) == 1.0 and bool((weights > 0).all())
    assert torch.equal(weights, weights.flip(0)) and torch.equal(weights, weights.flip(1))
    assert torch.equal(blend_weights(size, "uniform"), torch.ones(size))


# -- modes -----------------------------------------------------------------------------------


@pytest.mark.parametrize(
    "options",
    [
        {"mode": "single", "size": 64},
        {"mode": "multiscale", "size": 64, "scales": (0.75, 1.25)},
        {"mode": "sliding", "window": 160, "overlap": 0.25},
        {"mode": "sliding", "window": 96, "scale": 0.5, "blend": "uniform"},
    ],
    ids=["single", "multiscale", "sliding", "sliding-scaled"],
)
def test_each_mode_predicts_at_the_original_odd_size(lite, options):
    prob = predict(lite, random_image(333, 517), **options)
    assert prob.shape == (333, 517) and prob.dtype == torch.float32
    assert float(prob.min()) >= 0 and float(prob.max()) <= 1


def test_sliding_with_a_window_covering_the_image_equals_single_mode(lite):
    image = random_image(80, 80, seed=1)
    single = predict(lite, image, mode="single", size=80)
    for blend in ("gaussian", "uniform"):
        sliding = predict(lite, image, mode="sliding", window=100, blend=blend)
        torch.testing.assert_close(sliding, single, rtol=0, atol=1e-6)


@pytest.mark.parametrize("blend", ["gaussian", "uniform"])
@pytest.mark.parametrize("scale", [1.0, 0.45])
def test_sliding_blend_of_a_constant_model_is_constant_without_seams(blend, scale):
    image = random_image(700, 901)
    prob = predict(
        Constant(0.7), image, mode="sliding", window=128, overlap=0.3, blend=blend, scale=scale
    )
    assert prob.shape == (700, 901)
    assert float((prob - 0.7).abs().max()) < 1e-6


@pytest.mark.parametrize("scale", [1.0, 0.3])
def test_sliding_on_a_large_image_keeps_its_size(scale):
    image = random_image(2000, 3000)
    prob = predict(
        MeanColour(), image, mode="sliding", window=512, overlap=0.25, batch_size=8, scale=scale
    )
    assert prob.shape == (2000, 3000)
    if scale == 1:  # a per-pixel model: the blend must give back its whole-image output
        whole = Predictor(MeanColour(), PredictOptions()).forward(torch.from_numpy(image)[None])
        torch.testing.assert_close(prob, whole[0], rtol=0, atol=1e-6)


@pytest.mark.parametrize(
    "options",
    [
        {"mode": "single", "size": 64},
        {"mode": "multiscale", "size": 64, "scales": (0.8, 1.0, 1.3)},
        {"mode": "sliding", "window": 96, "overlap": 0.4},
        {"mode": "sliding", "window": 96, "scale": 0.7},
    ],
    ids=["single", "multiscale", "sliding", "sliding-scaled"],
)
def test_flip_averaged_output_of_a_symmetric_image_is_exactly_symmetric(lite, options):
    half = random_image(150, 131, seed=2)
    image = np.ascontiguousarray(np.concatenate([half, half[:, ::-1]], axis=1))  # 150x262
    assert np.array_equal(image, image[:, ::-1])
    flipped = predict(lite, image, flip=True, **options)
    assert torch.equal(flipped, flipped.flip(-1))
    plain = predict(lite, image, **options)
    assert not torch.equal(plain, plain.flip(-1))  # the model itself is not symmetric


def test_post_norm_stretches_each_map_to_zero_one(lite):
    prob = predict(lite, random_image(90, 70), mode="single", size=64, post_norm=True)
    assert float(prob.min()) == 0.0 and float(prob.max()) == 1.0
    constant = predict(Constant(0.3), random_image(20, 20), size=20, post_norm=True)
    assert torch.equal(constant, torch.full((20, 20), 0.3))


def test_batches_of_images_give_the_same_maps_as_one_at_a_time(lite):
    images = [random_image(60 + 7 * i, 90 - 5 * i, seed=i) for i in range(3)]
    batched = Predictor(lite, PredictOptions(size=64, batch_size=3, flip=True)).predict_tensors(
        images
    )
    for image, prob in zip(images, batched, strict=True):
        alone = predict(lite, image, size=64, batch_size=1, flip=True)
        torch.testing.assert_close(prob, alone, rtol=0, atol=1e-6)


def test_bf16_autocast_runs_on_the_cpu(lite):
    image = random_image(64, 64)
    full = predict(lite, image, size=64)
    amp = Predictor(lite, PredictOptions(size=64), amp="bf16", channels_last=True).predict_tensors(
        [image]
    )[0]
    assert amp.dtype == torch.float32
    assert float((amp - full).abs().max()) < 0.05


@pytest.mark.skipif(not torch.cuda.is_available(), reason="needs a CUDA GPU")
def test_fp16_sliding_on_the_gpu_matches_the_cpu(lite):
    image = random_image(300, 400)
    cpu = predict(lite, image, mode="sliding", window=128)
    gpu = Predictor(lite, PredictOptions(mode="sliding", window=128), "cuda", amp="fp16")
    assert float((gpu.predict_tensors([image])[0].cpu() - cpu).abs().max()) < 0.02
    lite.cpu()


# -- the command line ------------------------------------------------------------------------


@pytest.fixture(scope="module")
def checkpoint(tmp_path_factory, lite) -> Path:
    """A U2Seg checkpoint of ``lite`` whose stored config has base_size 48."""
    folder = tmp_path_factory.mktemp("ckpt")
    config = load_config(tiny_config(folder))
    path = folder / "model.pth"
    save_checkpoint(
        {"arch": "U2Net", "epoch": 1, "state_dict": lite.state_dict(), "config": config}, path
    )
    return path


def write_inputs(folder: Path) -> dict[str, tuple[int, int]]:
    """Images in every supported flavour (odd sizes, a sub-folder); returns {key: (h, w)}."""
    sizes = {}
    flavours = {
        "photo.jpg": random_image(41, 67),
        "sub/grey.png": random_image(50, 33)[:, :, 0],
        "sub/rgba.png": np.dstack([random_image(30, 44), np.full((30, 44), 128, np.uint8)]),
        "sub/deep/sixteen.tif": (random_image(25, 61).astype(np.uint16) * 257),
        "sub/photo.bmp": random_image(20, 20),
    }
    for name, array in flavours.items():
        path = folder / name
        path.parent.mkdir(parents=True, exist_ok=True)
        assert cv2.imwrite(str(path), array)
        sizes[Path(name).with_suffix("").as_posix()] = array.shape[:2]
    return sizes


def run_cli(*args: str | Path) -> int:
    return inference.main([str(a) for a in args])


def test_cli_writes_every_output_where_documented(checkpoint, tmp_path, capsys):
    sizes = write_inputs(tmp_path / "in")
    out = tmp_path / "out"
    status = run_cli(
        "-m", checkpoint, "-i", tmp_path / "in", "-o", out, "--save", "map,mask,cutout,overlay"
    )
    assert status == 0
    printed = capsys.readouterr().out
    assert "single mode, size 48" in printed and "5 images written" in printed
    for key, (h, w) in sizes.items():
        saliency = cv2.imread(str(out / "maps" / f"{key}.png"), cv2.IMREAD_UNCHANGED)
        mask = cv2.imread(str(out / "masks" / f"{key}.png"), cv2.IMREAD_UNCHANGED)
        cutout = cv2.imread(str(out / "cutouts" / f"{key}.png"), cv2.IMREAD_UNCHANGED)
        overlay = cv2.imread(str(out / "overlays" / f"{key}.jpg"), cv2.IMREAD_UNCHANGED)
        assert saliency.shape == (h, w) and saliency.dtype == np.uint8
        assert mask.shape == (h, w) and set(np.unique(mask)) <= {0, 255}
        assert np.array_equal(mask == 255, saliency >= 128)  # --threshold 0.5
        assert cutout.shape == (h, w, 4) and np.array_equal(cutout[:, :, 3], saliency)
        assert overlay.shape == (h, w, 3)


def test_cli_maps_equal_the_predictor_rounded_to_8_bits(checkpoint, lite, tmp_path):
    image = random_image(77, 51)
    cv2.imwrite(str(tmp_path / "x.png"), image[:, :, ::-1])
    args = ["--mode", "multiscale", "--scales", "0.5", "1", "--flip", "--size", "64"]
    assert run_cli("-m", checkpoint, "-i", tmp_path / "x.png", "-o", tmp_path / "out", *args) == 0
    expected = predict(lite, image, mode="multiscale", size=64, scales=(0.5, 1.0), flip=True)
    written = cv2.imread(str(tmp_path / "out" / "maps" / "x.png"), cv2.IMREAD_UNCHANGED)
    assert np.array_equal(written, np.rint(expected.double().numpy() * 255).astype(np.uint8))


def test_cli_skips_and_reports_corrupt_files(checkpoint, tmp_path, capsys):
    folder = tmp_path / "in"
    folder.mkdir()
    cv2.imwrite(str(folder / "good.png"), random_image(30, 40))
    (folder / "corrupt.jpg").write_bytes(b"\xff\xd8 not really a jpeg")
    (folder / "empty.png").write_bytes(b"")
    out = tmp_path / "out"
    assert run_cli("-m", checkpoint, "-i", folder, "-o", out) == 1
    captured = capsys.readouterr()
    assert "1 images written" in captured.out and "2 failed" in captured.out
    assert str(folder / "corrupt.jpg") in captured.err and str(folder / "empty.png") in captured.err
    assert sorted(p.name for p in (out / "maps").iterdir()) == ["good.png"]


def test_cli_gt_scores_the_written_maps(checkpoint, tmp_path, capsys):
    sizes = write_inputs(tmp_path / "in")
    gt = tmp_path / "gt"
    for key, (h, w) in sizes.items():
        if key != "photo":  # one image without ground truth
            (gt / key).parent.mkdir(parents=True, exist_ok=True)
            mask = np.zeros((h, w), np.uint8)
            mask[h // 4 : 3 * h // 4, w // 4 : 3 * w // 4] = 255
            cv2.imwrite(str(gt / f"{key}.png"), mask)
    scores = tmp_path / "scores.json"
    args = ["-m", checkpoint, "-i", tmp_path / "in", "-o", tmp_path / "out"]
    assert run_cli(*args, "--save", "mask", "--gt", gt, "--json", scores) == 0
    printed = capsys.readouterr().out
    assert "4 pairs" in printed and "MAE" in printed and "maxF" in printed and "IoU" in printed
    results = json.loads(scores.read_text())
    assert results["num_pairs"] == 4 and 0 <= results["MAE"] <= 1
    assert (tmp_path / "out" / "maps" / "photo.png").is_file()  # --gt saves the maps too


def test_cli_with_a_config_and_ported_weights(lite, tmp_path, capsys):
    names = {
        "encoders": "encode_modules",
        "decoders": "decode_modules",
        "side_heads": "side_modules",
        "fusion": "out_conv",
    }
    ported = {
        names[k.split(".", 1)[0]] + "." + k.split(".", 1)[1]: v
        for k, v in lite.state_dict().items()
    }
    torch.save({"model": ported}, tmp_path / "port.pth")
    config = tiny_config(tmp_path / "cfg")
    cv2.imwrite(str(tmp_path / "x.jpg"), random_image(64, 48))
    args = [
        "-m",
        tmp_path / "port.pth",
        "-c",
        config,
        "-i",
        tmp_path / "x.jpg",
        "-o",
        tmp_path / "out",
    ]
    assert run_cli(*args, "--mode", "sliding", "--window", "32") == 0
    assert "sliding mode, window 32, stride 24" in capsys.readouterr().out
    assert cv2.imread(str(tmp_path / "out" / "maps" / "x.png"), cv2.IMREAD_UNCHANGED).shape == (
        64,
        48,
    )


def test_cli_ignores_its_own_outputs_inside_the_input_folder(checkpoint, tmp_path, capsys):
    write_inputs(tmp_path / "in")
    for _ in range(2):
        assert run_cli("-m", checkpoint, "-i", tmp_path / "in", "-o", tmp_path / "in" / "pred") == 0
        assert "; 5 images" in capsys.readouterr().out


@pytest.mark.parametrize(
    ("extra", "message"),
    [
        (["--mode", "sliding", "--window", "32", "--stride", "40"], "stride must be between"),
        (["--overlap", "1.0", "--mode", "sliding"], "overlap must be in"),
        (["--device", "cuda:0,1"], "one device"),
    ],
)
def test_cli_bad_options_fail_with_a_message(checkpoint, tmp_path, capsys, extra, message):
    if "cuda" in extra[-1] and torch.cuda.device_count() < 2:
        pytest.skip("needs two GPUs (else the ids fall back to the CPU or name a missing GPU)")
    cv2.imwrite(str(tmp_path / "x.png"), random_image(20, 20))
    assert run_cli("-m", checkpoint, "-i", tmp_path / "x.png", "-o", tmp_path / "out", *extra) == 2
    assert message in capsys.readouterr().err


def test_cli_usage_errors(checkpoint, tmp_path, capsys):
    base = ["-m", checkpoint, "-o", tmp_path / "out"]
    assert run_cli(*base, "-i", tmp_path / "missing") == 2
    assert "does not exist" in capsys.readouterr().err
    (tmp_path / "clash").mkdir()
    for name in ("a.jpg", "a.png"):
        cv2.imwrite(str(tmp_path / "clash" / name), random_image(10, 10))
    assert run_cli(*base, "-i", tmp_path / "clash") == 2
    assert "a.jpg, a.png" in capsys.readouterr().err
    (tmp_path / "notes.pth").write_text("not a checkpoint")
    assert (
        run_cli("-m", tmp_path / "notes.pth", "-o", tmp_path / "out", "-i", tmp_path / "clash") == 2
    )
    assert "notes.pth" in capsys.readouterr().err
    with pytest.raises(SystemExit):
        run_cli(*base, "-i", tmp_path / "clash", "--save", "map,bogus")
    assert "choose from map, mask, cutout, overlay" in capsys.readouterr().err
