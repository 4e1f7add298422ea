"""inference.py: outputs where documented, failures reported, --gt scoring, usage errors."""

from __future__ import annotations

import json
import re
from pathlib import Path

import cv2
import numpy as np
import pytest
import torch

import inference
from tests.helpers import predict_map, random_image, tiny_config
from tests.models.test_weight_formats import NOT_TORCH_FILES, write_not_torch_file


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
    expected = predict_map(lite, image, mode="multiscale", size=64, scales=(0.5, 1.0), flip=True)
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
    assert "1 image written" in captured.out and "2 failed" in captured.out
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
    for name in ("a.png", "sub/b.jpg"):
        (tmp_path / "in" / name).parent.mkdir(parents=True, exist_ok=True)
        cv2.imwrite(str(tmp_path / "in" / name), random_image(20, 30))
    out = tmp_path / "in" / "pred"
    for _ in range(2):
        assert (
            run_cli("-m", checkpoint, "-i", tmp_path / "in", "-o", out, "--save", "map,mask") == 0
        )
        assert "; 2 images" in capsys.readouterr().out
        written = sorted(p.relative_to(out).as_posix() for p in out.rglob("*.png"))
        assert written == ["maps/a.png", "maps/sub/b.png", "masks/a.png", "masks/sub/b.png"]
    other = tmp_path / "in" / "pred2"  # a later run into another folder inside the input
    assert run_cli("-m", checkpoint, "-i", tmp_path / "in", "-o", other) == 0
    assert "; 2 images" in capsys.readouterr().out  # not the 4 outputs of the earlier run


def test_cli_refuses_an_output_folder_that_is_the_input_folder(checkpoint, tmp_path, capsys):
    cv2.imwrite(str(tmp_path / "a.png"), random_image(20, 30))
    assert run_cli("-m", checkpoint, "-i", tmp_path, "-o", tmp_path) == 2
    err = capsys.readouterr().err
    assert f"the output folder {tmp_path} is the input folder" in err
    assert "maps/, masks/, cutouts/, overlays/" in err and "would be read back" in err
    assert not (tmp_path / "maps").exists()


def test_cli_refuses_unwritable_outputs_before_predicting(checkpoint, tmp_path, capsys):
    write_inputs(tmp_path / "in")
    blocker = tmp_path / "afile"
    blocker.write_text("a file where a folder is needed")
    base = ["-m", checkpoint, "-i", tmp_path / "in"]
    assert run_cli(*base, "-o", blocker / "out") == 2
    assert f"error: -o: cannot write {blocker / 'out'}" in capsys.readouterr().err
    out = tmp_path / "out"
    assert run_cli(*base, "-o", out, "--gt", tmp_path / "in", "--json", blocker / "x.json") == 2
    assert f"error: --json: cannot write {blocker / 'x.json'}" in capsys.readouterr().err
    assert not (out / "maps").exists()  # nothing was predicted


def test_cli_refuses_an_input_inside_an_output_kind_folder(checkpoint, tmp_path, capsys):
    (tmp_path / "maps").mkdir()
    cv2.imwrite(str(tmp_path / "maps" / "a.png"), random_image(20, 30))
    assert run_cli("-m", checkpoint, "-i", tmp_path / "maps" / "a.png", "-o", tmp_path) == 2
    assert f"lies in the output folder {tmp_path / 'maps'}" in capsys.readouterr().err


@pytest.mark.parametrize("kind", NOT_TORCH_FILES)
def test_cli_names_a_model_file_of_another_format(kind, tmp_path, capsys):
    cv2.imwrite(str(tmp_path / "x.png"), random_image(20, 20))
    path, message = write_not_torch_file(kind, tmp_path)
    assert run_cli("-m", path, "-i", tmp_path / "x.png", "-o", tmp_path / "out") == 2
    err = capsys.readouterr().err
    assert re.search("error: " + message, err), err
    assert not (tmp_path / "out").exists()


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
