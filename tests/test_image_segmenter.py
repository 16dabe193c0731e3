"""ImageSegmenter: learns a toy it can learn, predicts masks at each image's size, tiles,
trains a pretrained encoder and a KerasHub segmenter, and refuses bad settings in one line."""

from __future__ import annotations

import json
from pathlib import Path

import keras
import numpy as np
import pytest
from PIL import Image
from test_cli import assert_user_error, cli

from dltoolkit import ImageSegmenter
from dltoolkit.core.callbacks import read_history
from dltoolkit.core.errors import ConfigError, DataError
from dltoolkit.core.metrics import pixel_confusion, segmentation_metrics
from dltoolkit.data.mask_batches import build_mask_augmenter, segmentation_dataset
from dltoolkit.data.masks import IGNORE, MaskSet, encode_mask
from dltoolkit.models.segment_inference import image_probabilities
from dltoolkit.models.segmentation import SegmentationLoss, build_segmentation_model

# A small U-Net: two levels, 8 filters; two epochs of 50 batches learn squares on noise.
TINY = dict(filters=8, depth=2, epochs=2, batch_size=8, learning_rate=1e-2, seed=1)


def squares(count: int, size=(32, 32), seed=0) -> tuple[np.ndarray, np.ndarray]:
    """Gray images (N, H, W, 1) of a bright square on dark noise; masks 1 inside the square."""
    rng = np.random.default_rng(seed)
    height, width = size
    images = rng.integers(0, 70, (count, height, width, 1)).astype(np.uint8)
    masks = np.zeros((count, height, width), np.uint8)
    for i in range(count):
        side = rng.integers(min(size) // 4, min(size) // 2)
        y, x = rng.integers(0, height - side), rng.integers(0, width - side)
        images[i, y : y + side, x : x + side] += 150
        masks[i, y : y + side, x : x + side] = 1
    return images, masks


def write_square_folder(root: Path, count=40, size=(32, 32), seed=0) -> Path:
    """images/ (PNG and JPEG) + masks/ (0/1 PNG) with the same stems."""
    images, masks = squares(count, size, seed)
    (root / "images").mkdir(parents=True)
    (root / "masks").mkdir()
    for i, (image, mask) in enumerate(zip(images, masks, strict=True)):
        suffix = ".png" if i % 2 else ".jpg"
        Image.fromarray(image[..., 0]).save(root / "images" / f"s{i:03d}{suffix}", quality=95)
        Image.fromarray(mask).save(root / "masks" / f"s{i:03d}.png")
    return root


@pytest.fixture(scope="module")
def fitted(fits):
    return fits.get("segment")


def test_learns_the_squares_and_reports_it(fitted):
    seg, folder = fitted
    assert seg.class_names_ == ["0", "1"]
    assert seg.metrics_["mean_iou"] > 0.8, seg.metrics_
    assert seg.metrics_["per_class"]["1"]["iou"] > 0.7
    history = read_history(seg.run_.history_file)
    assert history[-1]["loss"] < 0.5 * history[0]["loss"]
    html = seg.run_.report_file.read_text()
    assert "Best and worst test images" in html and "Per-class metrics" in html


def test_predict_writes_masks_at_each_images_size(fitted, tmp_path):
    seg, _ = fitted
    images, masks = squares(2, size=(45, 61), seed=7)
    paths = [tmp_path / "big.png", tmp_path / "z" / "big.png"]  # one stem: two files
    for path, image in zip(paths, images, strict=True):
        path.parent.mkdir(exist_ok=True)
        Image.fromarray(image[..., 0]).save(path)
    broken = tmp_path / "broken.png"
    broken.write_bytes(b"\x89PNG not really")
    rows = seg.predict([*paths, broken], output=tmp_path / "out")
    rows = sorted(rows, key=lambda r: r["input"])  # inputs are read in sorted order
    assert rows[1]["input"] == str(broken) and "error" in rows[1]
    rows = [rows[0], rows[2]]
    assert [Path(r["mask"]).name for r in rows] == ["big.png", "big-2.png"]
    for row, truth in zip(rows, masks, strict=True):
        assert (row["height"], row["width"]) == (45, 61)
        written = np.asarray(Image.open(row["mask"]))
        assert written.shape == truth.shape and set(np.unique(written)) <= {0, 1}
        assert np.mean(written == truth) > 0.9
        assert Image.open(row["overlay"]).size == (61, 45)
        assert sum(row["classes"].values()) == pytest.approx(1.0)
    with pytest.raises(DataError, match="broken.png"):
        seg.predict([broken], strict=True)
    assert np.array_equal(seg.predict_masks(images)[0], np.asarray(Image.open(rows[0]["mask"])))


def test_evaluate_and_cli_predict_into_a_folder(fitted, tmp_path, capsys):
    seg, _ = fitted
    test = write_square_folder(tmp_path / "test", count=8, seed=5)
    metrics = seg.evaluate(str(test))
    assert metrics["mean_iou"] > 0.7 and len(metrics["confusion_matrix"]) == 2
    code, out, err = cli(capsys, "evaluate", seg.run_.path, "--data", test, "--json")
    assert code == 0, err
    assert json.loads(out)["mean_iou"] == pytest.approx(metrics["mean_iou"])
    code, out, err = cli(
        capsys, "predict", seg.run_.path, test / "images", "--output", tmp_path / "masks", "--json"
    )
    assert code == 0, err
    assert len(list((tmp_path / "masks").glob("*_overlay.png"))) == 8


def test_tiles_train_and_predict_full_resolution(tmp_path):
    x, y = squares(24, size=(48, 48), seed=3)
    seg = ImageSegmenter(**TINY, tile=True, image_size=24)
    seg.fit((x, y), tmp_path / "run", progress=False)
    assert seg.image_shape_[:2] == (24, 24)
    big, truth = squares(1, size=(70, 53), seed=9)
    mask = seg.predict_masks(big)[0]
    assert mask.shape == (70, 53)
    assert np.mean(mask == truth[0]) > 0.85


def test_tiled_probabilities_equal_the_whole_image_for_a_pointwise_model():
    inputs = keras.Input((None, None, 1))
    outputs = keras.layers.Conv2D(3, 1, activation="softmax")(inputs)
    model = keras.Model(inputs, outputs)
    image = np.random.default_rng(0).uniform(0, 255, (37, 29, 1)).astype(np.float32)
    tiled, small = image_probabilities(model, image, (16, 16), tile=True, overlap=0.25)
    whole = model(image[None])[0]
    np.testing.assert_allclose(tiled, whole, atol=1e-5)
    assert small.shape == (16, 16, 3)


def test_augmentation_moves_image_and_mask_together():
    images, masks = squares(8, seed=2)
    augment = build_mask_augmenter("standard", "both", seed=0)
    moved, moved_masks = augment(images.astype(np.float32), masks.astype(np.int32))
    moved, moved_masks = np.asarray(moved)[..., 0], np.asarray(moved_masks)
    labelled = moved_masks != IGNORE
    assert (moved_masks == IGNORE).any()  # shifted/rotated-in borders count for nothing
    agree = (moved > 150) == (moved_masks == 1)
    assert agree[labelled].mean() > 0.95


def test_loss_counts_labelled_pixels_only():
    rng = np.random.default_rng(0)
    probs = keras.ops.softmax(rng.normal(size=(2, 8, 8, 3)).astype(np.float32))
    truth = rng.integers(0, 3, (2, 8, 8))
    other = np.array(probs)
    other[:, :4] = np.roll(other[:, :4], 1, axis=-1)  # change predictions where truth is ignored
    ignored = truth.copy()
    ignored[:, :4] = IGNORE
    for terms in (("crossentropy",), ("dice",), ("focal",), ("crossentropy", "dice")):
        loss = SegmentationLoss(terms)
        assert float(loss(ignored, probs)) == pytest.approx(float(loss(ignored, other)), rel=1e-5)
    perfect = keras.ops.one_hot(truth, 3)
    assert float(SegmentationLoss(("dice",))(truth, perfect)) == pytest.approx(0.0, abs=1e-5)
    weighted = SegmentationLoss(("crossentropy",), class_weights=[1.0, 1.0, 5.0])
    assert float(weighted(truth, probs)) > float(SegmentationLoss(("crossentropy",))(truth, probs))


def test_pipeline_resizes_masks_with_nearest_neighbour():
    images, masks = squares(3, size=(40, 30))
    pairs = MaskSet(masks=np.array([encode_mask(m) for m in masks], dtype=object), images=images)
    x, y = next(iter(segmentation_dataset(pairs, (20, 16, 1), 3, training=False)))
    assert x.shape == (3, 20, 16, 1) and y.shape == (3, 20, 16)
    assert set(np.unique(y)) <= {0, 1}


def test_pretrained_encoder_feeds_the_decoder_at_four_strides():
    built = build_segmentation_model("mobilenetv3-small", (64, 64, 1), 3, weights="none")
    assert [o.shape[1] for o in built.encoder.outputs] == [32, 16, 8, 4, 2]
    images = np.zeros((2, 50, 70, 1), np.float32)  # any size: fitted to 64x64 inside
    assert built.model(images).shape == (2, 64, 64, 3)


@pytest.mark.slow  # two traced phases of a keras.applications network: ~40 s
def test_pretrained_encoder_trains_in_two_phases(tmp_path):
    x, y = squares(16, size=(32, 32), seed=4)
    seg = ImageSegmenter(
        backbone="mobilenetv3-small",
        weights="none",
        filters=4,
        epochs=1,
        fine_tune_epochs=1,
        batch_size=8,
        seed=0,
    )
    seg.fit((np.repeat(x, 3, axis=-1), y), tmp_path / "run", progress=False)
    phases = [r["phase"] for r in read_history(seg.run_.history_file)]
    assert phases == ["decoder", "finetune"]
    assert seg.predict_masks(x[:1])[0].shape == (32, 32)


@pytest.mark.slow  # 25-50 s in the fast suite's CI run (2026-12-06)
def test_kerashub_segmenter_from_a_local_preset(tmp_path):
    import keras_hub

    encoder = keras_hub.models.MiTBackbone(
        layerwise_depths=[1, 1],
        num_layers=2,
        layerwise_num_heads=[1, 2],
        layerwise_sr_ratios=[4, 2],
        max_drop_path_rate=0.0,
        layerwise_patch_sizes=[7, 3],
        layerwise_strides=[4, 2],
        image_shape=(32, 32, 3),
        hidden_dims=[8, 16],
    )
    backbone = keras_hub.models.SegFormerBackbone(image_encoder=encoder, projection_filters=8)
    converter = keras_hub.layers.SegFormerImageConverter(image_size=(32, 32), scale=1 / 255)
    preprocessor = keras_hub.models.SegFormerImageSegmenterPreprocessor(image_converter=converter)
    task = keras_hub.models.SegFormerImageSegmenter(
        backbone=backbone, num_classes=5, preprocessor=preprocessor
    )
    task.save_to_preset(tmp_path / "preset")
    x, y = squares(16, size=(40, 40), seed=6)
    seg = ImageSegmenter(preset=str(tmp_path / "preset"), epochs=1, batch_size=8)
    seg.fit((x, y), tmp_path / "run", progress=False)
    assert seg.image_shape_[:2] == (32, 32)
    assert seg.predict_masks(x[:2])[1].shape == (40, 40)
    with pytest.raises(Exception, match="cannot load the KerasHub image segmenter"):
        ImageSegmenter(preset=str(tmp_path / "missing"), epochs=1).fit((x, y), tmp_path / "r2")


@pytest.mark.parametrize(
    "args, fragment",
    [
        (("--loss", "dice+hinge"), "loss 'dice+hinge'"),
        (("--backbone", "resnet"), "unknown backbone 'resnet'"),
        (("--fine-tune-epochs", "2"), "fine_tune_epochs needs a pretrained"),
        (("--flip", "diagonal"), "flip"),
        (("--image-size", "100"), "U-Net of depth 4 needs --image-size divisible by 16"),
    ],
)
def test_bad_settings_are_one_line_errors(capsys, tmp_path, args, fragment):
    code, out, err = cli(capsys, "segment", "--out", tmp_path / "run", *args)
    assert_user_error(code, out, err, fragment)
    assert not (tmp_path / "run").exists()


def test_config_error_before_any_data_is_read(tmp_path):
    with pytest.raises(ConfigError, match="divisible by 32"):
        ImageSegmenter(backbone="resnet50", image_size=100).fit("no/such/folder", tmp_path / "r")
    assert not (tmp_path / "r").exists()


def test_metrics_pool_every_pixel_and_leave_out_absent_classes():
    truth = np.array([[0, 0, 0, 0, 1, 1, 1, 1, 1, 1, IGNORE]])
    predicted = np.array([[0, 0, 0, 1, 0, 0, 1, 1, 1, 1, 2]])
    metrics = segmentation_metrics(pixel_confusion(truth, predicted, 3), ["a", "b", "c"])
    assert metrics["per_class"]["a"]["iou"] == pytest.approx(3 / 6)
    assert metrics["per_class"]["b"]["iou"] == pytest.approx(4 / 7)
    assert metrics["per_class"]["a"]["dice"] == pytest.approx(6 / 9)
    assert metrics["per_class"]["c"] == {"iou": None, "dice": None, "pixels": 0}
    assert metrics["mean_iou"] == pytest.approx((3 / 6 + 4 / 7) / 2)
    assert metrics["pixel_accuracy"] == pytest.approx(0.7) and metrics["pixels"] == 10
    assert metrics["baseline_pixel_accuracy"] == pytest.approx(0.6)
    assert metrics["baseline_mean_iou"] == pytest.approx(0.3)
