"""Segmentation data layer: images with class masks, on real files made here with PIL."""

from __future__ import annotations

import json

import numpy as np
import pytest
from PIL import Image
from pycocotools import mask as coco_mask

from dltoolkit.core.errors import ConfigError, DataError
from dltoolkit.data.masks import IGNORE, decode_mask, encode_mask, load_mask_source
from dltoolkit.data.samples import load_sample

SIZE = (12, 8)  # (W, H) of every test picture


def save_image(path, size=SIZE, mode="RGB", fmt=None, seed=0):
    """A random picture saved with PIL."""
    path.parent.mkdir(parents=True, exist_ok=True)
    pixels = np.random.default_rng(seed).integers(0, 256, (size[1], size[0], 3), dtype=np.uint8)
    Image.fromarray(pixels).convert(mode).save(path, format=fmt)
    return path


def save_mask(path, values, mode=None, palette=None):
    """An (H, W) or (H, W, 3) array (uint8, or uint16 for a 16-bit PNG) saved as a mask file."""
    path.parent.mkdir(parents=True, exist_ok=True)
    values = np.asarray(values)
    picture = Image.fromarray(values if values.dtype == np.uint16 else values.astype(np.uint8))
    if mode == "P":
        picture = picture.convert("L").convert("P")  # identity palette indices ...
        picture.putpalette(palette)  # ... then the real colours
    picture.save(path)
    return path


def stripes(values, size=SIZE):
    """An (H, W) mask whose columns cycle through `values`."""
    row = np.resize(np.asarray(values, np.uint8), size[0])
    return np.tile(row, (size[1], 1))


def make_pairs(images_dir, masks_dir, masks_by_name):
    for i, (name, values) in enumerate(masks_by_name.items()):
        save_image(images_dir / f"{name}.jpg", seed=i)
        save_mask(masks_dir / f"{name}.png", values)


def decoded(mask_set):
    return [decode_mask(png) for png in mask_set.masks]


def test_encode_decode_round_trip():
    index_map = np.arange(35, dtype=np.uint8).reshape(5, 7)
    png = encode_mask(index_map)
    assert png.startswith(b"\x89PNG")
    np.testing.assert_array_equal(decode_mask(png), index_map)
    with pytest.raises(ValueError):
        encode_mask(index_map.astype(np.int64))


def test_folder_of_images_and_masks_contiguous_gray(tmp_path):
    data = tmp_path / "scans"
    make_pairs(
        data / "images",
        data / "masks",
        {"a": stripes([0, 1]), "b": stripes([2, 0]), "sub/c": stripes([1])},
    )
    (data / "images" / "notes.txt").write_text("not an image")
    source = load_mask_source(data)
    assert source.class_names == ["0", "1", "2"]
    assert list(source.splits) == ["train"]
    train = source.splits["train"]
    assert len(train) == 3 and train.images is None
    assert list(train.names) == ["a", "b", "sub/c"]
    assert train.paths[0].endswith("images/a.jpg")
    for got, want in zip(
        decoded(train), [stripes([0, 1]), stripes([2, 0]), stripes([1])], strict=True
    ):
        np.testing.assert_array_equal(got, want)
    assert source.description.startswith(f"folder {data} (3 images, 3 classes")
    assert len(source.colors) == 3 and len(set(source.colors)) == 3
    assert len(train.subset([2, 0])) == 2 and list(train.subset([2, 0]).names) == ["sub/c", "a"]


def test_split_folders_explicit_masks_and_yaml_classes(tmp_path):
    """coco128's shape: train2017/val2017 under both folders, sparse values, 0 = unlabeled."""
    images, masks = tmp_path / "images", tmp_path / "sem_masks"
    make_pairs(
        images / "train2017", masks / "train2017", {"1": stripes([0, 7]), "2": stripes([20, 7])}
    )
    make_pairs(images / "val2017", masks / "val2017", {"3": stripes([0, 9, 20])})  # 9: val only
    classes = tmp_path / "sem_config.yaml"
    classes.write_text(
        "train:\n  images: x\nclasses:\n  0: unlabeled\n  20: sky\n  7: person\n  9: dog\n"
    )
    source = load_mask_source(images, masks=masks, classes=classes)
    assert source.class_names == ["person", "dog", "sky"]  # value order
    assert list(source.splits) == ["train", "val"]
    assert list(source.splits["val"].names) == ["3"]
    np.testing.assert_array_equal(decoded(source.splits["train"])[1], stripes([2, 0]))
    np.testing.assert_array_equal(decoded(source.splits["val"])[0], stripes([IGNORE, 1, 2]))
    assert (
        "200" not in source.description and "3 images in train/val, 3 classes" in source.description
    )


def test_binary_0_255_masks(tmp_path):
    make_pairs(
        tmp_path / "image", tmp_path / "label", {"0": stripes([0, 255]), "1": stripes([255])}
    )
    source = load_mask_source(tmp_path / "image", masks=tmp_path / "label")
    assert source.class_names == ["0", "255"]
    assert "binary" in source.description
    np.testing.assert_array_equal(decoded(source.splits["train"])[0], stripes([0, 1]))


def test_ignore_value_and_a_shared_class_name(tmp_path):
    make_pairs(tmp_path / "images", tmp_path / "masks", {"a": stripes([0, 1, 2, 255])})
    source = load_mask_source(tmp_path, ignore_value=255)
    assert source.class_names == ["0", "1", "2"]
    np.testing.assert_array_equal(decoded(source.splits["train"])[0], stripes([0, 1, 2, IGNORE]))
    classes = tmp_path / "classes.json"
    classes.write_text(json.dumps({"classes": {"0": "ground", "1": "cell", "2": "cell"}}))
    source = load_mask_source(tmp_path, classes=classes, ignore_value=255)
    assert source.class_names == ["ground", "cell"]
    np.testing.assert_array_equal(decoded(source.splits["train"])[0], stripes([0, 1, 1, IGNORE]))


def test_rgb_palette_text_file(tmp_path):
    road, car = (128, 64, 128), (0, 0, 142)
    colours = np.zeros((SIZE[1], SIZE[0], 3), np.uint8)
    colours[:, 4:], colours[:, 8:] = road, car
    save_image(tmp_path / "images" / "a.png")
    save_mask(tmp_path / "masks" / "a.png", colours)
    classes = tmp_path / "classes.txt"
    classes.write_text("# colour name\n0,0,0 void\n#00008e car\n128, 64, 128 road\n\n")
    source = load_mask_source(tmp_path, classes=classes)
    assert source.class_names == ["car", "road"]  # file order
    assert source.colors == [car, road]
    np.testing.assert_array_equal(
        decoded(source.splits["train"])[0], stripes([IGNORE] * 4 + [1] * 4 + [0] * 4)
    )
    classes.write_text("128,64,128 road\n0,0,142 car\n")
    with pytest.raises(DataError, match=r"masks/a.png has colour #000000 \(0, 0, 0\)"):
        load_mask_source(tmp_path, classes=classes)
    with pytest.raises(DataError, match=r"RGB mask .*masks/a.png: give classes=FILE"):
        load_mask_source(tmp_path)


def test_toml_classes_name_to_colour_and_gray_rgb_masks(tmp_path):
    gray = np.repeat(stripes([0, 1])[..., None], 3, axis=2)  # RGB file, but R == G == B
    save_image(tmp_path / "images" / "a.png")
    save_mask(tmp_path / "masks" / "a.png", gray)
    assert load_mask_source(tmp_path).class_names == ["0", "1"]
    classes = tmp_path / "classes.toml"
    classes.write_text('[classes]\nzero = [0, 0, 0]\none = "#010101"\n')
    source = load_mask_source(tmp_path, classes=classes)
    assert source.class_names == ["zero", "one"] and source.colors == [(0, 0, 0), (1, 1, 1)]


def test_palette_mode_masks_use_indices_and_palette_colours(tmp_path):
    palette = [0, 0, 0, 200, 10, 10, 10, 200, 10] + [255, 255, 255] * 253
    save_image(tmp_path / "images" / "a.jpg")
    save_mask(tmp_path / "masks" / "a.png", stripes([0, 1, 2]), mode="P", palette=palette)
    assert Image.open(tmp_path / "masks" / "a.png").mode == "P"
    source = load_mask_source(tmp_path)
    assert source.class_names == ["0", "1", "2"]
    assert source.colors == [(0, 0, 0), (200, 10, 10), (10, 200, 10)]
    np.testing.assert_array_equal(decoded(source.splits["train"])[0], stripes([0, 1, 2]))


def write_coco(tmp_path):
    """Three 12x8 images: a polygon then an RLE on top, an iscrowd region, no annotation."""
    h, w = SIZE[1], SIZE[0]
    for name in ("a.jpg", "b.jpg", "c.jpg"):
        save_image(tmp_path / "imgs" / name)
    cat_box = np.zeros((h, w), np.uint8, order="F")
    cat_box[2:4, 0:12] = 1  # painted over the polygon's rows 2-3
    rle = coco_mask.encode(cat_box)
    crowd = np.zeros((h, w), np.uint8, order="F")
    crowd[:, 10:] = 1
    crowd_rle = coco_mask.encode(crowd)
    doc = {
        "images": [
            {"id": 1, "file_name": "a.jpg", "height": h, "width": w},
            {"id": 2, "file_name": "b.jpg", "height": h, "width": w},
            {"id": 3, "file_name": "c.jpg", "height": h, "width": w},
        ],
        "categories": [{"id": 18, "name": "dog"}, {"id": 3, "name": "cat"}],
        "annotations": [
            {  # dog: the rectangle x 0..6, y 0..6 as a polygon
                "id": 1,
                "image_id": 1,
                "category_id": 18,
                "iscrowd": 0,
                "segmentation": [[0, 0, 6, 0, 6, 6, 0, 6]],
            },
            {  # cat: compressed RLE, later, so on top
                "id": 2,
                "image_id": 1,
                "category_id": 3,
                "iscrowd": 0,
                "segmentation": {"size": [h, w], "counts": rle["counts"].decode()},
            },
            {  # crowd of dogs: uncompressed RLE (column-major run lengths) -> IGNORE
                "id": 3,
                "image_id": 2,
                "category_id": 18,
                "iscrowd": 1,
                "segmentation": {"size": [h, w], "counts": [h * 10, h * 2]},
            },
            {
                "id": 4,
                "image_id": 2,
                "category_id": 3,
                "iscrowd": 0,
                "segmentation": {"size": [h, w], "counts": crowd_rle["counts"].decode()},
            },
        ],
    }
    path = tmp_path / "instances.json"
    path.write_text(json.dumps(doc))
    return path, doc


def test_coco_json_polygon_rle_and_crowd(tmp_path):
    path, _ = write_coco(tmp_path)
    source = load_mask_source(path, images=tmp_path / "imgs")
    assert source.class_names == ["background", "cat", "dog"]  # category ids 3, 18
    a, b, c = decoded(source.splits["train"])
    assert (a[0:2, 0:6] == 2).all() and (a[2:4, :] == 1).all()  # dog polygon, cat RLE on top
    assert (a[4:6, 0:6] == 2).all() and (a[6:, :] == 0).all() and (a[0:2, 7:] == 0).all()
    assert (b[:, :10] == 0).all() and (
        b[:, 10:] == 1
    ).all()  # the cat annotation came after the crowd
    assert (c == 0).all()
    assert list(source.splits["train"].names) == ["a", "b", "c"]


def test_coco_crowd_is_ignored(tmp_path):
    path, doc = write_coco(tmp_path)
    doc["annotations"].pop()  # no cat over the crowd now
    path.write_text(json.dumps(doc))
    b = decoded(load_mask_source(path, images=tmp_path / "imgs").splits["train"])[1]
    assert (b[:, 10:] == IGNORE).all() and (b[:, :10] == 0).all()


@pytest.mark.parametrize(
    "change, message",
    [
        (lambda doc: doc["annotations"][0].pop("segmentation"), "annotation 1 has no segmentation"),
        (lambda doc: doc["annotations"][0].update(category_id=99), "category_id 99"),
        (lambda doc: doc["images"][0].update(width=20), r"a.jpg is 12x8 but .* says 20x8"),
        (lambda doc: doc["images"][0].update(file_name="zzz.jpg"), "missing from .*zzz.jpg"),
        (lambda doc: doc.pop("categories"), "not a COCO instances file"),
    ],
)
def test_coco_errors(tmp_path, change, message):
    path, doc = write_coco(tmp_path)
    change(doc)
    path.write_text(json.dumps(doc))
    with pytest.raises(DataError, match=message):
        load_mask_source(path, images=tmp_path / "imgs")


def test_coco_needs_images_and_takes_no_classes(tmp_path):
    path, _ = write_coco(tmp_path)
    with pytest.raises(DataError, match="needs images=FOLDER"):
        load_mask_source(path)
    with pytest.raises(ConfigError, match="names its classes itself"):
        load_mask_source(path, images=tmp_path / "imgs", ignore_value=0)


def test_arrays_and_dict_of_splits():
    rng = np.random.default_rng(0)
    x = rng.uniform(0, 255, (4, 8, 12)).astype(np.float32)
    y = rng.integers(0, 3, (4, 8, 12))
    y[0, 0, 0] = 9
    source = load_mask_source((x, y), ignore_value=9)
    train = source.splits["train"]
    assert source.class_names == ["0", "1", "2"] and train.paths is None
    assert train.images.dtype == np.uint8 and train.images.shape == (4, 8, 12, 1)
    want = y.astype(np.uint8)
    want[0, 0, 0] = IGNORE
    np.testing.assert_array_equal(np.stack(decoded(train)), want)
    folds = load_mask_source({"train": (x[:3], y[:3] % 2), "val": (x[3:], y[3:])})
    assert list(folds.splits) == ["train", "val"] and folds.class_names == ["0", "1", "2"]
    assert list(folds.splits["val"].names) == ["0"]
    with pytest.raises(DataError, match="keys train, val, test"):
        load_mask_source({"valid": (x, y)})
    with pytest.raises(DataError, match="got x"):
        load_mask_source((x, y[:, :4]))


def test_digit_scenes_sample():
    images, masks, names = load_sample("digit-scenes")
    assert images.shape == (1200, 64, 64, 1) and images.dtype == np.uint8
    assert masks.shape == (1200, 64, 64) and masks.dtype == np.uint8
    assert names == ["background"] + [str(d) for d in range(10)]
    assert set(np.unique(masks)) == set(range(11))
    assert images[masks > 0].mean() > 3 * images[masks == 0].mean()  # bright digits, dark ground
    again = load_sample("digit-scenes")
    np.testing.assert_array_equal(again[0], images)
    np.testing.assert_array_equal(again[1], masks)
    source = load_mask_source("digit-scenes")
    assert source.class_names == names and len(source.splits["train"]) == 1200
    assert source.colors[0] == (0, 0, 0)
    np.testing.assert_array_equal(decode_mask(source.splits["train"].masks[5]), masks[5])


def test_class_names_map_by_name_for_evaluation(tmp_path):
    make_pairs(tmp_path / "images", tmp_path / "masks", {"a": stripes([0, 2])})  # no 1
    source = load_mask_source(tmp_path, class_names=["2", "1", "0"])
    assert source.class_names == ["2", "1", "0"]
    np.testing.assert_array_equal(decoded(source.splits["train"])[0], stripes([2, 0]))
    with pytest.raises(DataError, match="never saw class.*2"):
        load_mask_source(tmp_path, class_names=["0", "1"])


def test_unreadable_images_are_skipped_or_refused(tmp_path):
    make_pairs(tmp_path / "images", tmp_path / "masks", {"a": stripes([0, 1]), "b": stripes([1])})
    (tmp_path / "images" / "b.jpg").write_bytes(b"not a jpeg")
    source = load_mask_source(tmp_path)
    assert len(source.splits["train"]) == 1
    assert source.skipped[0][0].endswith("b.jpg") and "1 unreadable skipped" in source.description
    with pytest.raises(DataError, match="first .*b.jpg"):
        load_mask_source(tmp_path, strict=True)


@pytest.mark.parametrize(
    "setup, message",
    [
        (
            lambda d: save_mask(d / "masks" / "a.png", np.zeros((3, 3))),
            r"masks/a.png is 3x3 but its image .*a.jpg is 12x8",
        ),
        (
            lambda d: (d / "masks" / "a.png").write_bytes(b"broken"),
            "cannot read mask .*masks/a.png",
        ),
        (lambda d: save_image(d / "images" / "z.jpg"), r"1 image\(s\) have no mask .*images/z.jpg"),
        (
            lambda d: save_mask(d / "masks" / "y.png", stripes([0])),
            r"1 mask\(s\) have no image .*masks/y.png",
        ),
        (
            lambda d: save_mask(d / "masks" / "a.png", stripes([0, 4])),
            "mask .*masks/a.png has value 4.*classes=FILE",
        ),
        (
            lambda d: [save_mask(d / "masks" / f, stripes([0])) for f in ("a.png", "b.png")],
            r"hold 1 class\(es\) \(0\)",
        ),
        (
            lambda d: save_mask(d / "masks" / "a.png", stripes([0, 1]).astype(np.uint16) * 300),
            "a.png has mode I;16",
        ),
    ],
)
def test_folder_errors_name_the_file(tmp_path, setup, message):
    make_pairs(
        tmp_path / "images", tmp_path / "masks", {"a": stripes([0, 1]), "b": stripes([1, 2])}
    )
    setup(tmp_path)
    with pytest.raises(DataError, match=message):
        load_mask_source(tmp_path)


def test_missing_folders_and_classes_file_errors(tmp_path):
    (tmp_path / "images").mkdir()
    with pytest.raises(DataError, match="needs an images/ and a masks/ subfolder"):
        load_mask_source(tmp_path)
    (tmp_path / "masks").mkdir()
    with pytest.raises(DataError, match="no .jpg/.jpeg/.png/.bmp/.gif images found"):
        load_mask_source(tmp_path)
    make_pairs(tmp_path / "images", tmp_path / "masks", {"a": stripes([0, 5, 6])})
    classes = tmp_path / "classes.txt"
    classes.write_text("0 ground\n5 cell\n")
    with pytest.raises(
        DataError, match=r"masks/a.png has value 6, which .*classes.txt does not list"
    ):
        load_mask_source(tmp_path, classes=classes)
    classes.write_text("0 ground\nfive cell\n")
    with pytest.raises(DataError, match="classes.txt line 2"):
        load_mask_source(tmp_path, classes=classes)
    classes.write_text("0 ground\n1,2,3 cell\n")
    with pytest.raises(DataError, match="mixes mask values and colours"):
        load_mask_source(tmp_path, classes=classes)
    with pytest.raises(DataError, match="does not exist"):
        load_mask_source(tmp_path / "nowhere")


def test_options_that_do_not_apply(tmp_path):
    x = np.zeros((2, 4, 4), np.uint8)
    y = np.zeros((2, 4, 4), np.uint8)
    y[:, 0] = 1
    colours = tmp_path / "colours.txt"
    colours.write_text("0,0,0 ground\n255,0,0 cell\n")
    with pytest.raises(ConfigError, match="colours.txt maps colours"):
        load_mask_source((x, y), classes=colours)
    with pytest.raises(ConfigError, match="masks= is for a folder"):
        load_mask_source((x, y), masks=tmp_path)
    with pytest.raises(ConfigError, match="images= is for COCO"):
        load_mask_source(tmp_path, images=tmp_path)
    values = tmp_path / "values.yaml"
    values.write_text("- ground\n- cell\n")
    assert load_mask_source((x, y), classes=values).class_names == ["ground", "cell"]


@pytest.mark.slow
def test_tfds_dataset_with_variable_sizes(tmp_path):
    """A tiny tfds builder shaped like oxford_iiit_pet: image + segmentation_mask, values 1..3."""
    import tensorflow_datasets as tfds

    class TinySegmentation(tfds.core.GeneratorBasedBuilder):
        VERSION = tfds.core.Version("1.0.0")

        def _info(self):
            features = {
                "image": tfds.features.Image(shape=(None, None, 3)),
                "segmentation_mask": tfds.features.Image(shape=(None, None, 1)),
            }
            return tfds.core.DatasetInfo(
                builder=self, features=tfds.features.FeaturesDict(features)
            )

        def _split_generators(self, dl_manager):
            return {"train": self._generate_examples(4), "test": self._generate_examples(2)}

        def _generate_examples(self, count):
            for i in range(count):
                mask = np.resize(np.array([1, 2, 3], np.uint8), (6 + i, 5, 1))
                yield i, {"image": np.full((6 + i, 5, 3), 9, np.uint8), "segmentation_mask": mask}

    TinySegmentation(data_dir=tmp_path).download_and_prepare()
    classes = tmp_path / "pets.txt"
    classes.write_text("1 pet\n2 background\n3 border\n")
    source = load_mask_source("tfds:tiny_segmentation", tfds_data_dir=tmp_path, classes=classes)
    assert source.class_names == ["pet", "background", "border"]
    assert list(source.splits) == ["train", "test"]
    train = source.splits["train"]
    assert train.images.dtype == object and len(train) == 4  # sizes vary: one array each
    for image, png in zip(train.images, train.masks, strict=True):
        assert decode_mask(png).shape == image.shape[:2]
        assert set(np.unique(decode_mask(png))) == {0, 1, 2}
    with pytest.raises(DataError, match="value 1, but without a classes file"):
        load_mask_source("tfds:tiny_segmentation", tfds_data_dir=tmp_path)
