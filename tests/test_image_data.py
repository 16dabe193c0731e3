"""Image data layer: sources, checks, splits and tf.data pipelines, on real files made here."""

from __future__ import annotations

import numpy as np
import pandas as pd
import pytest
import tensorflow as tf
from PIL import Image

from dltoolkit.core.errors import ConfigError, DataError
from dltoolkit.data.images import (
    ImageSet,
    decode_image_bytes,
    image_files,
    infer_image_shape,
    load_image_source,
    make_dataset,
    prepare_array,
    split_stratified,
    to_image_shape,
)
from dltoolkit.data.samples import list_samples, load_sample

# (file name, PIL format, mode): every format, grayscale/RGB/RGBA/palette mixed.
MIXED = [
    ("a.jpg", "JPEG", "RGB"),
    ("b.JPEG", "JPEG", "L"),
    ("c.png", "PNG", "RGBA"),
    ("d.png", "PNG", "P"),
    ("e.bmp", "BMP", "RGB"),
    ("f.gif", "GIF", "P"),
    ("sub/g.png", "PNG", "L"),
]


def save_image(path, fmt="PNG", mode="RGB", size=(16, 12), seed=0):
    """A random picture of `size` (W, H) saved with PIL in `fmt` and `mode`."""
    path.parent.mkdir(parents=True, exist_ok=True)
    pixels = np.random.default_rng(seed).integers(0, 256, (size[1], size[0], 3), dtype=np.uint8)
    Image.fromarray(pixels).convert(mode).save(path, format=fmt)
    return path


def make_folder(root, classes=("cat", "dog", "owl")):
    for c, name in enumerate(classes):
        for i, (file, fmt, mode) in enumerate(MIXED):
            save_image(root / name / file, fmt, mode, seed=10 * c + i)
    return root


def test_folder_source_mixed_formats_and_modes(tmp_path):
    root = make_folder(tmp_path / "imgs")
    (root / "cat" / "notes.txt").write_text("not an image")
    save_image(root / "dog" / ".hidden.png")
    source = load_image_source(root)
    assert source.class_names == ["cat", "dog", "owl"]
    assert list(source.splits) == ["train"]
    train = source.splits["train"]
    assert len(train) == 3 * len(MIXED) and train.images is None
    assert train.labels.dtype == np.int32 and np.bincount(train.labels).tolist() == [7, 7, 7]
    assert any(p.endswith("/cat/sub/g.png") for p in train.paths)
    assert not any(p.endswith((".txt", ".hidden.png")) for p in train.paths)
    assert source.skipped == []
    assert "21 images, 3 classes" in source.description


def test_train_val_test_folder_layout(tmp_path):
    for split in ("train", "validation", "test"):
        make_folder(tmp_path / split, classes=("a", "b"))
    source = load_image_source(tmp_path)
    assert set(source.splits) == {"train", "val", "test"}
    assert source.class_names == ["a", "b"]
    assert all(len(s) == 2 * len(MIXED) for s in source.splits.values())
    assert all("/test/" in p for p in source.splits["test"].paths)


def test_layout_with_class_missing_from_train(tmp_path):
    make_folder(tmp_path / "train", classes=("a", "b"))
    make_folder(tmp_path / "test", classes=("a", "c"))
    with pytest.raises(DataError, match="class folder.* c .*train/ lacks"):
        load_image_source(tmp_path)


def test_csv_source_with_relative_paths_and_split_column(tmp_path):
    for i in range(12):
        save_image(tmp_path / "pics" / f"{i}.png", seed=i)
    rows = [
        {"Filename": f"pics/{i}.png", "Class": i % 3, "split": "test" if i >= 9 else "train"}
        for i in range(12)
    ]
    csv = tmp_path / "labels.csv"
    pd.DataFrame(rows).to_csv(csv, index=False)
    source = load_image_source(str(csv))
    assert source.class_names == ["0", "1", "2"]
    assert len(source.splits["train"]) == 9 and len(source.splits["test"]) == 3
    assert source.splits["test"].labels.tolist() == [0, 1, 2]
    assert source.splits["train"].paths[0] == str(tmp_path / "pics" / "0.png")


def test_csv_with_named_columns_and_dataframe(tmp_path, monkeypatch):
    for i in range(4):
        save_image(tmp_path / f"{i}.jpg", "JPEG", seed=i)
    table = pd.DataFrame({"img_file": [f"{i}.jpg" for i in range(4)], "kind": list("xyxy")})
    table.to_csv(tmp_path / "t.csv", index=False)
    source = load_image_source(tmp_path / "t.csv", path_col="img_file", label_col="kind")
    assert source.class_names == ["x", "y"] and len(source.splits["train"]) == 4
    monkeypatch.chdir(tmp_path)  # DataFrame paths are relative to the working directory
    assert len(load_image_source(table, path_col="img_file", label_col="kind").splits["train"]) == 4


def test_csv_missing_columns(tmp_path):
    pd.DataFrame({"picture": ["a.png"], "kind": ["x"]}).to_csv(tmp_path / "t.csv", index=False)
    with pytest.raises(DataError, match=r"columns: picture, kind.*--path-col and --label-col"):
        load_image_source(tmp_path / "t.csv")
    with pytest.raises(DataError, match="no label column 'nope'"):
        load_image_source(tmp_path / "t.csv", path_col="picture", label_col="nope")


def test_csv_naming_missing_files(tmp_path):
    save_image(tmp_path / "ok.png")
    table = pd.DataFrame({"path": ["ok.png", "gone1.png", "gone2.png"], "label": ["a", "b", "a"]})
    table.to_csv(tmp_path / "t.csv", index=False)
    with pytest.raises(DataError, match=r"names 2 file\(s\) that do not exist, e.g. .*gone1.png"):
        load_image_source(tmp_path / "t.csv")


def test_corrupt_files_skipped_or_strict(tmp_path):
    root = make_folder(tmp_path / "imgs", classes=("a", "b"))
    (root / "a" / "broken.jpg").write_bytes(b"this is not a jpeg")
    (root / "b" / "empty.png").write_bytes(b"")
    save_image(root / "b" / "palette.bmp", "BMP", "P")  # TF would misread its colours
    source = load_image_source(root)
    skipped = dict(source.skipped)
    assert {p.rsplit("/", 1)[1] for p in skipped} == {"broken.jpg", "empty.png", "palette.bmp"}
    assert "palette BMP" in skipped[str(root / "b" / "palette.bmp")]
    assert len(source.splits["train"]) == 2 * len(MIXED)
    assert "3 unreadable skipped" in source.description
    with pytest.raises(DataError, match=r"3 unreadable or non-image file\(s\), first .*broken.jpg"):
        load_image_source(root, strict=True)


@pytest.mark.parametrize(
    ("setup", "message"),
    [
        (lambda p: p, "no images found in"),
        (lambda p: save_image(p / "loose.png"), "must be in one subfolder per class"),
        (lambda p: save_image(p / "only" / "x.png"), "only one class"),
    ],
)
def test_bad_folders(tmp_path, setup, message):
    setup(tmp_path)
    with pytest.raises(DataError, match=message):
        load_image_source(tmp_path)


def test_bad_data_strings(tmp_path):
    with pytest.raises(DataError, match="does not exist.*digits"):
        load_image_source(tmp_path / "nowhere")
    (tmp_path / "x.txt").write_text("hi")
    with pytest.raises(DataError, match="not a .csv"):
        load_image_source(tmp_path / "x.txt")
    with pytest.raises(DataError, match="pair"):
        load_image_source((np.zeros((2, 4, 4)),))


def write_tfds_dataset(data_dir, name="toy_images", n_train=12, n_test=6):
    """A prepared TFDS data set on disk, written the way `tfds build` leaves it."""
    import tensorflow_datasets as tfds
    from tensorflow_datasets.core import dataset_info, sequential_writer

    version_dir = data_dir / name / "1.0.0"
    version_dir.mkdir(parents=True)
    features = tfds.features.FeaturesDict(
        {
            "image": tfds.features.Image(shape=(8, 8, 1)),
            "label": tfds.features.ClassLabel(names=["zero", "one", "two"]),
        }
    )
    identity = dataset_info.DatasetIdentity(
        name=name, data_dir=str(version_dir), module_name="", version="1.0.0"
    )
    info = dataset_info.DatasetInfo(
        builder=identity, features=features, supervised_keys=("image", "label")
    )
    writer = sequential_writer.SequentialWriter(ds_info=info, max_examples_per_shard=100)
    writer.initialize_splits(["train", "test"])
    rng = np.random.default_rng(0)

    def examples(n):
        return [
            {"image": rng.integers(0, 256, (8, 8, 1), dtype=np.uint8), "label": i % 3}
            for i in range(n)
        ]

    writer.add_examples({"train": examples(n_train), "test": examples(n_test)})
    writer.close_all()


def test_tfds_from_local_data_dir(tmp_path, monkeypatch):
    write_tfds_dataset(tmp_path)
    source = load_image_source("tfds:toy_images", tfds_data_dir=str(tmp_path))
    assert source.class_names == ["zero", "one", "two"]
    assert set(source.splits) == {"train", "test"}
    train = source.splits["train"]
    assert train.images.shape == (12, 8, 8, 1) and train.images.dtype == np.uint8
    assert train.labels.tolist() == [0, 1, 2] * 4
    monkeypatch.setenv("TFDS_DATA_DIR", str(tmp_path))
    assert len(load_image_source("tfds:toy_images").splits["test"]) == 6


def test_tfds_unknown_or_unprepared(tmp_path):
    with pytest.raises(DataError, match="cannot open tfds dataset 'no_such_set_xyz'"):
        load_image_source("tfds:no_such_set_xyz", tfds_data_dir=str(tmp_path))
    # imagenet2012 needs a manual download, so preparing it fails at once, offline or not.
    with pytest.raises(DataError, match="not prepared in .*--tfds-data-dir.*TFDS_DATA_DIR"):
        load_image_source("tfds:imagenet2012", tfds_data_dir=str(tmp_path))


def test_split_stratified_keeps_classes_and_is_deterministic():
    labels = np.repeat(np.arange(3), 20).astype(np.int32)
    images = ImageSet(labels=labels, images=np.arange(60)[:, None, None, None])
    parts = split_stratified(images, {"val": 0.2, "test": 0.2}, seed=1)
    assert list(parts) == ["train", "val", "test"]
    assert [len(p) for p in parts.values()] == [36, 12, 12]
    for part in parts.values():
        assert set(part.labels) == {0, 1, 2}
    ids = [set(p.images.ravel()) for p in parts.values()]
    assert set.union(*ids) == set(range(60)) and sum(map(len, ids)) == 60
    again = split_stratified(images, {"val": 0.2, "test": 0.2}, seed=1)
    other = split_stratified(images, {"val": 0.2, "test": 0.2}, seed=2)
    assert np.array_equal(again["val"].images, parts["val"].images)
    assert not np.array_equal(other["val"].images, parts["val"].images)


def test_split_stratified_tiny_classes_and_bad_fractions():
    labels = np.array([0] * 10 + [1] * 2 + [2], np.int32)
    images = ImageSet(labels=labels, paths=np.array([f"{i}.png" for i in range(13)]))
    parts = split_stratified(images, {"val": 0.1}, seed=0)
    assert set(parts["val"].labels) == {0, 1} and 2 in parts["train"].labels
    assert len(parts["train"]) + len(parts["val"]) == 13
    assert list(split_stratified(images, {"val": 0.0}, seed=0)) == ["train"]
    with pytest.raises(ConfigError, match="sum to less than 1"):
        split_stratified(images, {"val": 0.6, "test": 0.5}, seed=0)


def test_infer_image_shape(tmp_path):
    color = load_image_source(make_folder(tmp_path / "color")).splits["train"]
    assert infer_image_shape(color) == (12, 16, 3)
    assert infer_image_shape(color, max_side=8) == (6, 8, 3)
    for i, (fmt, mode) in enumerate([("PNG", "L"), ("GIF", "L"), ("JPEG", "L"), ("BMP", "L")]):
        save_image(tmp_path / "gray" / f"c{i % 2}" / f"{i}.{fmt.lower()}", fmt, mode, (40, 20))
    gray = load_image_source(tmp_path / "gray").splits["train"]
    assert infer_image_shape(gray, max_side=10) == (5, 10, 1)
    flat = ImageSet(np.zeros(2, np.int32), images=np.zeros((2, 8, 8)))
    assert infer_image_shape(flat) == (8, 8, 1)
    rgba = ImageSet(np.zeros(2, np.int32), images=np.zeros((2, 300, 150, 4), np.uint8))
    assert infer_image_shape(rgba) == (128, 64, 3)


def test_make_dataset_from_files_matches_decode(tmp_path):
    train = load_image_source(make_folder(tmp_path / "imgs")).splits["train"]
    shape = (10, 14, 3)
    ds = make_dataset(train, shape, batch_size=8, training=False, num_classes=3)
    batches = list(ds)
    assert [len(x) for x, _ in batches] == [8, 8, 5]
    x = np.concatenate([b[0].numpy() for b in batches])
    y = np.concatenate([b[1].numpy() for b in batches])
    assert x.dtype == np.float32 and x.shape == (21, 10, 14, 3)
    assert x.min() >= 0 and x.max() <= 255
    assert y.dtype == np.float32 and np.array_equal(y, np.eye(3)[train.labels])
    for i in (0, 3, 5, 6):  # JPEG, palette PNG, GIF, nested grayscale PNG
        single = decode_image_bytes(tf.io.read_file(train.paths[i]), shape).numpy()
        np.testing.assert_array_equal(single, x[i])
    gray = decode_image_bytes(tf.io.read_file(train.paths[0]), (10, 14, 1))
    assert gray.shape == (10, 14, 1)


def test_make_dataset_training_shuffles_augments_and_drops_undecodable(tmp_path):
    root = make_folder(tmp_path / "imgs", classes=("a", "b"))
    png = (root / "a" / "c.png").read_bytes()
    (root / "a" / "truncated.png").write_bytes(png[:60])  # header fine, pixel data cut off
    train = load_image_source(root).splits["train"]
    assert len(train) == 15  # the cheap header check lets it through ...
    calls = []

    def augment(images, labels):
        calls.append(1)
        return images * 0 + 7, labels

    ds = make_dataset(train, (8, 8, 1), 4, training=True, num_classes=2, seed=3, augment=augment)
    first = [y.numpy() for _, y in ds]
    x, _ = next(iter(ds))
    assert calls and x.shape == (4, 8, 8, 1) and float(x.numpy().max()) == 7.0
    assert sum(len(y) for y in first) == 14  # ... and the data set drops it
    assert np.concatenate(first).sum(axis=0).tolist() == [7, 7]


def test_make_dataset_from_arrays():
    x = np.random.default_rng(0).integers(0, 256, (10, 6, 6, 3), dtype=np.uint8)
    images = ImageSet(labels=np.arange(10, dtype=np.int32) % 2, images=x)
    ds = make_dataset(images, (6, 6, 3), 4, training=False, num_classes=2)
    xb, yb = next(iter(ds))
    assert xb.dtype == tf.float32 and xb.shape == (4, 6, 6, 3) and yb.shape == (4, 2)
    np.testing.assert_array_equal(xb.numpy(), x[:4].astype(np.float32))
    shuffled = make_dataset(images, (12, 12, 1), 3, training=True, num_classes=2, seed=0)
    sizes = [(tuple(a.shape), tuple(b.shape)) for a, b in shuffled]
    assert sizes == [((3, 12, 12, 1), (3, 2))] * 3 + [((1, 12, 12, 1), (1, 2))]


def test_prepare_array_and_to_image_shape():
    gray = np.full((3, 4, 4), 100, np.uint8)
    out = prepare_array(gray, (8, 8, 3))
    assert out.shape == (3, 8, 8, 3) and out.dtype == np.float32 and np.allclose(out, 100)
    rgba = np.zeros((2, 4, 4, 4), np.float32)
    assert prepare_array(rgba, (4, 4, 1)).shape == (2, 4, 4, 1)
    # serving traces the same ops on unknown shapes and still gets a static output shape
    fn = tf.function(lambda b: decode_image_bytes(b, (5, 7, 1)))
    spec = fn.get_concrete_function(tf.TensorSpec([], tf.string)).structured_outputs
    assert spec.shape == (5, 7, 1)
    assert to_image_shape(tf.zeros((2, 9, 9, 3)), (3, 3, 3)).shape == (2, 3, 3, 3)


def test_arrays_source_and_class_names_mapping(tmp_path):
    x = np.zeros((6, 5, 5), np.uint8)
    source = load_image_source((x, np.array(["dog", "cat", "dog", "cat", "emu", "emu"])))
    assert source.class_names == ["cat", "dog", "emu"]
    assert source.splits["train"].labels.tolist() == [1, 0, 1, 0, 2, 2]
    assert source.splits["train"].images.shape == (6, 5, 5, 1)
    cifar_like = load_image_source((np.zeros((4, 3, 3, 3)), np.array([[1], [0], [1], [0]])))
    assert cifar_like.class_names == ["0", "1"]

    root = make_folder(tmp_path / "imgs", classes=("cat", "dog"))
    mapped = load_image_source(root, class_names=["ant", "dog", "cat"])
    assert mapped.class_names == ["ant", "dog", "cat"]
    assert sorted(set(mapped.splits["train"].labels.tolist())) == [1, 2]
    with pytest.raises(DataError, match="never saw label.* emu"):
        load_image_source((x, np.array(["cat", "emu"] * 3)), class_names=["cat", "dog"])


def test_digits_sample():
    images, labels, names = load_sample("digits")
    assert images.shape == (1797, 8, 8, 1) and images.dtype == np.uint8
    assert images.max() == 255 and names == [str(d) for d in range(10)]
    assert ("digits" in dict(list_samples())) and np.bincount(labels).size == 10
    source = load_image_source("digits")
    assert len(source.splits["train"]) == 1797 and source.class_names == names
    assert source.description.startswith("sample digits (1,797 images, 10 classes")
    with pytest.raises(DataError, match="available samples: .*digits"):
        load_sample("nope")


def test_image_files(tmp_path):
    save_image(tmp_path / "b" / "x.PNG")
    save_image(tmp_path / "b" / "deep" / "y.jpeg", "JPEG")
    save_image(tmp_path / "a.gif", "GIF", "P")
    (tmp_path / "b" / "z.txt").write_text("no")
    found = image_files([tmp_path / "b", str(tmp_path / "a.gif")])
    assert found == sorted(found) and len(found) == 3
    assert {f.rsplit("/", 1)[1] for f in found} == {"x.PNG", "y.jpeg", "a.gif"}
    with pytest.raises(DataError, match="does not exist"):
        image_files(tmp_path / "missing.png")
    with pytest.raises(DataError, match="not a .jpg"):
        image_files(tmp_path / "b" / "z.txt")
