"""Detection data layer: one scene written in every box format with real PIL images, loaded
back into the same xyxy pixel boxes; splits, negatives and every reported problem."""

from __future__ import annotations

import json
import re

import numpy as np
import pytest
from PIL import Image

from dltoolkit.core.errors import ConfigError, DataError
from dltoolkit.data.boxes import BOX_FORMAT, load_box_source
from dltoolkit.data.samples import load_sample

CLASSES = ["cat", "dog"]
# name -> (file name, (width, height), [(x1, y1, x2, y2 pixels, class index)]); c is a negative
SCENE = {
    "a": ("a.png", (20, 16), [((2, 3, 10, 11), 0), ((12, 0, 20, 8), 1)]),
    "b": ("b.jpg", (24, 12), [((5, 2, 15, 10), 1)]),
    "c": ("c.png", (10, 10), []),
}


def save_image(path, size, seed=0):
    path.parent.mkdir(parents=True, exist_ok=True)
    pixels = np.random.default_rng(seed).integers(0, 256, (size[1], size[0], 3), dtype=np.uint8)
    Image.fromarray(pixels).save(path)
    return path


def yolo_line(box, cls, size):
    (x1, y1, x2, y2), (w, h) = box, size
    return f"{cls} {(x1 + x2) / 2 / w} {(y1 + y2) / 2 / h} {(x2 - x1) / w} {(y2 - y1) / h}"


def write_yolo(images, labels, scene=SCENE):
    for file, size, objects in scene.values():
        save_image(images / file, size)
        label = (labels / file).with_suffix(".txt")
        label.parent.mkdir(parents=True, exist_ok=True)
        label.write_text("".join(yolo_line(box, cls, size) + "\n" for box, cls in objects))


def write_voc(root, scene=SCENE):
    (root / "Annotations").mkdir(parents=True)
    for stem, (file, (w, h), objects) in scene.items():
        save_image(root / "JPEGImages" / file, (w, h))
        boxes = "".join(
            f"<object><name>{CLASSES[c]}</name><difficult>{c}</difficult><bndbox>"
            f"<xmin>{x1 + 1}</xmin><ymin>{y1 + 1}</ymin><xmax>{x2}</xmax><ymax>{y2}</ymax>"
            "</bndbox></object>"
            for (x1, y1, x2, y2), c in objects
        )
        xml = f"<annotation><filename>{file}</filename><size><width>{w}</width>"
        xml += f"<height>{h}</height><depth>3</depth></size>{boxes}</annotation>"
        (root / "Annotations" / f"{stem}.xml").write_text(xml)


def coco_doc(scene=SCENE):
    category_ids = [3, 7]  # COCO ids need not be 0.. or contiguous
    images, annotations = [], []
    for i, (file, (w, h), objects) in enumerate(scene.values()):
        images.append({"id": 10 + i, "file_name": file, "width": w, "height": h})
        for (x1, y1, x2, y2), c in objects:
            annotations.append(
                {
                    "id": len(annotations) + 1,
                    "image_id": 10 + i,
                    "category_id": category_ids[c],
                    "bbox": [x1, y1, x2 - x1, y2 - y1],
                    "iscrowd": 0,
                }
            )
    categories = [{"id": 7, "name": "dog"}, {"id": 3, "name": "cat"}]
    return {"images": images, "annotations": annotations, "categories": categories}


def write_coco(path, images_folder):
    for file, size, _ in SCENE.values():
        save_image(images_folder / file, size)
    path.write_text(json.dumps(coco_doc()))


def csv_rows(scene=SCENE, prefix=""):
    rows = []
    for file, (w, h), objects in scene.values():
        rows += [
            f"{prefix}{file},{w},{h},{CLASSES[c]},{x1},{y1},{x2},{y2}"
            for (x1, y1, x2, y2), c in objects
        ] or [f"{prefix}{file},{w},{h},,,,,"]
    return rows


def scene_arrays():
    x = [np.zeros((size[1], size[0], 3), np.uint8) for _, size, _ in SCENE.values()]
    y = [
        {"boxes": [box for box, _ in objects], "labels": [c for _, c in objects]}
        for _, _, objects in SCENE.values()
    ]
    return x, y


def loaded(box_set):
    """name -> (boxes, labels) of a BoxSet."""
    return {
        str(n): (b, lab)
        for n, b, lab in zip(box_set.names, box_set.boxes, box_set.labels, strict=True)
    }


def assert_scene(box_set, names=None):
    found = loaded(box_set)
    assert sorted(found) == sorted(names or SCENE)
    for name, (boxes, labels) in found.items():
        objects = SCENE[name][2]
        assert boxes.dtype == np.float32 and boxes.shape == (len(objects), 4)
        assert labels.dtype == np.int32
        np.testing.assert_allclose(
            boxes, np.reshape([box for box, _ in objects], (-1, 4)), atol=1e-4
        )
        assert labels.tolist() == [c for _, c in objects]
    sizes = {str(n): tuple(s) for n, s in zip(box_set.names, box_set.sizes, strict=True)}
    assert sizes == {name: SCENE[name][1][::-1] for name in found}


def make_yolo(root):
    write_yolo(root / "images", root / "labels")
    (root / "classes.txt").write_text("cat\ndog\n")
    return root


def make_voc(root):
    write_voc(root)
    return root


def make_coco(root):
    write_coco(root / "instances.json", root / "images")
    return root / "instances.json"


def make_csv(root):
    for file, size, _ in SCENE.values():
        save_image(root / "images" / file, size)
    (root / "data").mkdir()
    header = "filename,width,height,class,xmin,ymin,xmax,ymax\n"
    (root / "data" / "boxes.csv").write_text(header + "\n".join(csv_rows()) + "\n")
    return root / "data" / "boxes.csv"  # images in ../images, as raccoon_det has them


def make_tsv(root):
    for file, size, _ in SCENE.values():
        save_image(root / file, size)
    rows = [r.split(",") for r in csv_rows()]
    table = ["Image\tW\tH\tLabel\tX1\tY1\tX2\tY2"] + ["\t".join(r) for r in rows]
    (root / "boxes.tsv").write_text("\n".join(table) + "\n")
    return root / "boxes.tsv"


def make_yaml(root):
    write_yolo(root / "ds" / "images" / "train", root / "ds" / "labels" / "train")
    (root / "data.yaml").write_text("path: ds\ntrain: images/train\nnames: [cat, dog]\n")
    return root / "data.yaml"


@pytest.mark.parametrize(
    "make",
    [make_yolo, make_voc, make_coco, make_csv, make_tsv, make_yaml],
    ids=lambda f: f.__name__,
)
def test_the_same_scene_from_every_format(tmp_path, make):
    source = load_box_source(make(tmp_path))
    assert source.class_names == CLASSES and list(source.splits) == ["train"]
    train = source.splits["train"]
    assert_scene(train)
    assert train.paths is not None and train.images is None
    assert source.problems == []
    assert "3 images" in source.description and "3 boxes, 2 classes" in source.description


def test_arrays_give_the_scene_with_id_names(tmp_path):
    x, y = scene_arrays()
    source = load_box_source((x, y))
    assert BOX_FORMAT == "xyxy" and source.class_names == ["0", "1"]
    train = source.splits["train"]
    assert train.images.dtype == object and train.images[0].shape == (16, 20, 3)  # sizes vary
    assert train.paths is None and list(train.names) == ["0", "1", "2"]
    assert [b.tolist() for b in train.boxes] == [
        [list(box) for box, _ in objects] for _, _, objects in SCENE.values()
    ]
    same = [np.zeros((8, 8), np.uint8)] * 2
    both = load_box_source(
        {"train": (np.stack(same), y[:2]), "val": (same[:1], y[1:2])}, class_names=CLASSES
    )
    assert both.class_names == CLASSES and both.splits["train"].images.shape == (2, 8, 8, 1)
    assert list(both.splits) == ["train", "val"]
    with pytest.raises(DataError, match="keys train, val, test"):
        load_box_source({"valid": (x, y)})
    with pytest.raises(DataError, match="2 boxes but 1 labels"):
        load_box_source((x[:1], [{"boxes": [(0, 0, 1, 1)] * 2, "labels": [0]}]))


def test_voc_corners_are_one_based(tmp_path):
    """VOC's <xmin>1</xmin> is the first pixel column: x1 = 0 after the shift."""
    write_voc(tmp_path, {"a": ("a.png", (8, 8), [((0, 0, 8, 8), 0)])})
    source = load_box_source(tmp_path)
    assert source.splits["train"].boxes[0].tolist() == [[0, 0, 8, 8]] and source.problems == []


def test_splits_of_each_layout(tmp_path):
    yolo = tmp_path / "yolo"
    for split in ("train", "val"):
        write_yolo(yolo / "images" / split, yolo / "labels" / split)
    assert list(load_box_source(yolo).splits) == ["train", "val"]

    roboflow = tmp_path / "roboflow"  # train/images + valid/images, names in data.yaml
    for folder in ("train", "valid", "test"):
        write_yolo(roboflow / folder / "images", roboflow / folder / "labels")
    (roboflow / "data.yaml").write_text("nc: 2\nnames: {0: cat, 1: dog}\n")
    source = load_box_source(roboflow)
    assert list(source.splits) == ["train", "val", "test"] and source.class_names == CLASSES
    assert_scene(source.splits["val"])

    voc = tmp_path / "voc"
    write_voc(voc)
    (voc / "ImageSets" / "Main").mkdir(parents=True)
    (voc / "ImageSets" / "Main" / "train.txt").write_text("a\nc\n")
    (voc / "ImageSets" / "Main" / "val.txt").write_text("b\n")
    source = load_box_source(voc)
    assert {s: list(b.names) for s, b in source.splits.items()} == {
        "train": ["a", "c"],
        "val": ["b"],
    }

    table = tmp_path / "split.csv"
    for file, size, _ in SCENE.values():
        save_image(tmp_path / file, size)
    rows = [r + (",val" if r.startswith("b") else ",train") for r in csv_rows()]
    table.write_text("path,width,height,label,x1,y1,x2,y2,split\n" + "\n".join(rows))
    source = load_box_source(table)
    assert {s: len(b) for s, b in source.splits.items()} == {"train": 2, "val": 1}


def test_data_yaml_lists_labels_rule_and_sibling_label_folder(tmp_path):
    """val as a .txt of images; labels of images/ in det_labels/ beside it (no labels/): the
    folder whose prefix the YAML's name starts with, as coco128_seg_det has it."""
    root = tmp_path / "coco"
    write_yolo(root / "images" / "train2017", root / "det_labels" / "train2017")
    write_yolo(root / "images" / "val2017", root / "det_labels" / "val2017")
    (root / "inst_labels").mkdir()
    (root / "val.txt").write_text("./images/val2017/a.png\nimages/val2017/b.jpg\n")
    (root / "det_config.yaml").write_text(
        "path: .\ntrain: [images/train2017]\nval: val.txt\nnames:\n  1: dog\n  0: cat\n"
    )
    source = load_box_source(root / "det_config.yaml")
    assert source.class_names == CLASSES and source.problems == []
    assert "(labels in det_labels)" in source.description
    assert_scene(source.splits["train"])
    assert_scene(source.splits["val"], ["a", "b"])
    (root / "other.yaml").write_text("train: images/train2017\n")
    with pytest.raises(DataError, match="labels/ beside it"):
        load_box_source(root / "other.yaml")
    (root / "bad.yaml").write_text("train: images/nowhere\n")
    with pytest.raises(DataError, match="nowhere does not exist"):
        load_box_source(root / "bad.yaml")


def test_polygon_lines_give_their_tight_box(tmp_path):
    save_image(tmp_path / "images" / "a.png", (10, 10))
    (tmp_path / "labels").mkdir()
    (tmp_path / "labels" / "a.txt").write_text("0 0.1 0.2 0.5 0.3 0.3 0.9\n")
    source = load_box_source(tmp_path)
    np.testing.assert_allclose(source.splits["train"].boxes[0], [[1, 2, 5, 9]], atol=1e-5)
    assert source.class_names == ["0"]  # no classes file: the ids seen


def test_negatives(tmp_path):
    """Empty label files, COCO images without annotations and empty CSV rows are negatives;
    a missing label file or XML is a negative too, but reported."""
    yolo = make_yolo(tmp_path / "yolo")
    assert loaded(load_box_source(yolo).splits["train"])["c"][0].shape == (0, 4)
    (yolo / "labels" / "c.txt").unlink()
    source = load_box_source(yolo)
    assert len(source.splits["train"]) == 3
    assert source.problems == [("labels/c.txt", "no label file, its image kept as a negative")]

    voc = make_voc(tmp_path / "voc")
    (voc / "Annotations" / "c.xml").unlink()
    source = load_box_source(voc)
    assert_scene(source.splits["train"])
    assert source.problems == [("JPEGImages/c.png", "no annotation XML, kept as a negative")]

    coco = make_coco(tmp_path / "coco")
    assert len(loaded(load_box_source(coco).splits["train"])["c"][0]) == 0


def yolo_case(root, lines, size=(20, 10)):
    save_image(root / "images" / "a.png", size)
    save_image(root / "images" / "ok.png", size)
    (root / "labels").mkdir(parents=True)
    (root / "labels" / "a.txt").write_text("\n".join(lines) + "\n")
    (root / "labels" / "ok.txt").write_text("0 0.5 0.5 0.5 0.5\n")
    (root / "classes.txt").write_text("cat\ndog\n")
    return root


PROBLEMS = {  # line of labels/a.txt (image 20x10) -> (problem reported, kept box or None)
    "zero-area": ("0 0.5 0.5 0 0.2", "line 1: zero-area box, dropped", None),
    "outside": ("0 1.5 0.5 0.2 0.2", "line 1: box wholly outside the image, dropped", None),
    "clipped": (
        "1 0.9 0.5 0.4 0.4",
        "line 1: box partly outside the image, clipped",
        [14, 3, 20, 7],
    ),
    "unknown id": (
        "5 0.5 0.5 0.2 0.2",
        "line 1: class id 5 is not one of the 2 classes, box dropped",
        None,
    ),
    "bad line": ("0 0.5 0.5 0.2", "line 1 is not 'class cx cy w h', dropped", None),
}


@pytest.mark.parametrize("kind", PROBLEMS)
def test_each_problem_is_reported_or_strict_error(tmp_path, kind):
    line, problem, kept = PROBLEMS[kind]
    root = yolo_case(tmp_path, [line, "0 0.5 0.5 0.1 0.2"])  # a good second box stays
    source = load_box_source(root)
    assert source.problems == [("labels/a.txt", problem)]
    assert "1 problems" in source.description
    boxes = loaded(source.splits["train"])["a"][0]
    expected = ([kept] if kept else []) + [[9, 4, 11, 6]]
    np.testing.assert_allclose(boxes, expected, atol=1e-4)
    with pytest.raises(DataError, match=f"a.txt: {problem.split(',')[0]}.*strict mode off"):
        load_box_source(root, strict=True)


def test_inverted_and_rounding_overshoot(tmp_path):
    x = [np.zeros((10, 20, 3), np.uint8)]
    boxes = [(5, 5, 2, 8), (-0.5, 0, 20.5, 10), (1, 1, np.nan, 3)]
    source = load_box_source((x, [{"boxes": boxes, "labels": [0, 0, 0]}]))
    assert source.problems == [
        ("train y[0]", "box 0: inverted box (x2 < x1 or y2 < y1), dropped"),
        ("train y[0]", "box 2: box with non-finite coordinates, dropped"),
    ]  # half a pixel over is rounding: clipped without a word
    assert source.splits["train"].boxes[0].tolist() == [[0, 0, 20, 10]]


def test_images_missing_or_unreadable_are_skipped(tmp_path):
    root = make_yolo(tmp_path)
    (root / "images" / "b.jpg").write_bytes(b"not a picture")
    source = load_box_source(root)
    assert sorted(loaded(source.splits["train"])) == ["a", "c"]
    assert [(f, w.split(" (")[0]) for f, w in source.problems] == [
        ("images/b.jpg", "unreadable image")
    ]
    with pytest.raises(DataError, match="b.jpg: unreadable image .*strict mode off.*skipped"):
        load_box_source(root, strict=True)

    table = make_csv(tmp_path / "csv")
    table.write_text(table.read_text() + "gone.png,5,5,cat,1,1,2,2\n")
    source = load_box_source(table)
    assert source.problems[-1][1] == "image file not found, skipped"
    assert source.problems[-1][0].endswith("gone.png")


def test_coco_crowds_and_strays_are_dropped(tmp_path):
    path = make_coco(tmp_path)
    doc = json.loads(path.read_text())
    doc["annotations"][0]["iscrowd"] = 1
    doc["annotations"].append({"id": 99, "image_id": 10, "category_id": 5, "bbox": [0, 0, 2, 2]})
    doc["annotations"].append({"id": 98, "image_id": 77, "category_id": 3, "bbox": [0, 0, 2, 2]})
    path.write_text(json.dumps(doc))
    source = load_box_source(path)
    assert source.problems == [
        ("instances.json", "annotation 1 is a crowd box (iscrowd=1), dropped"),
        ("instances.json", "annotation 98 has image_id 77, not in images, dropped"),
        ("instances.json", "annotation 99: class id 5 is not one of the 2 classes, box dropped"),
    ]
    assert len(loaded(source.splits["train"])["a"][0]) == 1
    with pytest.raises(DataError, match="crowd box"):
        load_box_source(path, strict=True)
    elsewhere = tmp_path / "pictures"
    (tmp_path / "images").rename(elsewhere)
    with pytest.raises(DataError, match="pass images=FOLDER"):
        load_box_source(path)
    assert len(load_box_source(path, images=str(elsewhere)).splits["train"]) == 3


def test_class_names_of_a_trained_run(tmp_path):
    voc = make_voc(tmp_path / "voc")
    source = load_box_source(voc, class_names=["dog", "cat"])
    assert source.class_names == ["dog", "cat"]
    assert loaded(source.splits["train"])["a"][1].tolist() == [1, 0]
    source = load_box_source(voc, class_names=["dog"])
    assert source.problems == [
        ("Annotations/a.xml", "object 1: class 'cat' is not one the model knows (dog), box dropped")
    ]
    with pytest.raises(DataError, match="class 'cat' is not one the model knows"):
        load_box_source(voc, class_names=["dog"], strict=True)
    bare = tmp_path / "bare"  # no classes file: ids index the run's classes
    write_yolo(bare / "images", bare / "labels")
    assert load_box_source(bare).class_names == ["0", "1"]
    source = load_box_source(bare, class_names=CLASSES)
    assert source.class_names == CLASSES
    assert_scene(source.splits["train"])


@pytest.mark.parametrize(
    "setup, error, message",
    [
        (lambda p: p / "nowhere", DataError, "does not exist; give a YOLO or VOC folder"),
        (lambda p: p.joinpath("x.txt").write_text("hi") and p / "x.txt", DataError, "not a data"),
        (lambda p: p.joinpath("x").mkdir() or p / "x", DataError, "no images/ folder"),
        (lambda p: write_yolo(p / "images", p / "l") or p, DataError, "labels does not exist"),
        (lambda p: "tfds:no_such_set_xyz", DataError, "cannot open tfds dataset"),
    ],
)
def test_bad_data(tmp_path, setup, error, message):
    with pytest.raises(error, match=message):
        load_box_source(setup(tmp_path), tfds_data_dir=str(tmp_path))


def test_empty_or_classless_data_is_an_error(tmp_path):
    root = yolo_case(tmp_path, [])
    (root / "labels" / "ok.txt").write_text("")
    with pytest.raises(DataError, match="no boxes in its train split"):
        load_box_source(root)
    with pytest.raises(DataError, match="has no classes"):
        load_box_source(make_voc(tmp_path / "voc"), class_names=[])
    empty = tmp_path / "empty"
    (empty / "images").mkdir(parents=True)
    (empty / "labels").mkdir()
    with pytest.raises(DataError, match="no readable images in its train split"):
        load_box_source(empty)
    with pytest.raises(ConfigError, match="images= is for COCO JSON and CSV"):
        load_box_source(make_voc(tmp_path / "voc2"), images=str(tmp_path))


def test_digit_boxes_sample():
    images, boxes, labels, names = load_sample("digit-boxes")
    scenes, masks, _ = load_sample("digit-scenes")
    np.testing.assert_array_equal(images, scenes)  # the same scenes
    assert names == [str(d) for d in range(10)] and len(boxes) == len(labels) == 1200
    for i in range(0, 1200, 97):  # each box is the tight box of its digit's mask
        covered = np.zeros(masks[i].shape, bool)
        for (x1, y1, x2, y2), label in zip(boxes[i].astype(int), labels[i], strict=True):
            inside = masks[i, y1:y2, x1:x2] == label + 1
            assert (
                inside[0].any() and inside[-1].any() and inside[:, 0].any() and inside[:, -1].any()
            )
            covered[y1:y2, x1:x2] |= inside
        np.testing.assert_array_equal(covered, masks[i] > 0)
    source = load_box_source("digit-boxes")
    assert source.class_names == names and source.problems == []
    train = source.splits["train"]
    assert train.images.shape == (1200, 64, 64, 1) and (train.sizes == 64).all()
    np.testing.assert_array_equal(train.boxes[7], boxes[7])


def test_tfds_detection_set(tmp_path):
    """A tiny tfds builder shaped like coco/2017: image + objects (bbox, label, is_crowd)."""
    import tensorflow_datasets as tfds

    class TinyBoxes(tfds.core.GeneratorBasedBuilder):
        VERSION = tfds.core.Version("1.0.0")

        def _info(self):
            objects = {
                "bbox": tfds.features.BBoxFeature(),
                "label": tfds.features.ClassLabel(names=CLASSES),
                "is_crowd": np.bool_,
            }
            features = {
                "image": tfds.features.Image(shape=(None, None, 3)),
                "objects": tfds.features.Sequence(objects),
            }
            return tfds.core.DatasetInfo(
                builder=self, features=tfds.features.FeaturesDict(features)
            )

        def _split_generators(self, dl_manager):
            return {"train": self._generate_examples(3), "validation": self._generate_examples(1)}

        def _generate_examples(self, count):
            for i in range(count):  # images 10 high, 20 + i wide; one box, one crowd
                bbox = tfds.features.BBox(ymin=0.2, xmin=0.1, ymax=0.6, xmax=0.5)
                objects = {"bbox": [bbox, bbox], "label": [1, 0], "is_crowd": [False, True]}
                yield i, {"image": np.zeros((10, 20 + i, 3), np.uint8), "objects": objects}

    TinyBoxes(data_dir=tmp_path).download_and_prepare()
    source = load_box_source("tfds:tiny_boxes", tfds_data_dir=str(tmp_path))
    assert source.class_names == CLASSES and list(source.splits) == ["train", "val"]
    train = source.splits["train"]
    assert train.images.dtype == object and train.sizes.tolist() == [[10, 20], [10, 21], [10, 22]]
    np.testing.assert_allclose(train.boxes[0], [[2, 2, 10, 6]], atol=1e-5)
    assert [b.tolist() for b in train.labels] == [[1]] * 3
    assert source.problems[0] == (
        "tfds tiny_boxes train example 0",
        "box 1 is a crowd box, dropped",
    )


def csv_with_bad_rows(root):
    table = make_csv(root)
    rows = [",5,5,cat,1,1,2,2", "a.png,20,16,cat,1,x,2,2", "a.png,20,16,,1,1,2,2"]
    table.write_text(table.read_text() + "\n".join(rows) + "\n")
    return table


def voc_with_bad_object(root):
    write_voc(root)
    xml = root / "Annotations" / "b.xml"
    xml.write_text(xml.read_text().replace("<xmax>15</xmax>", ""))
    return root


def yolo_without_label_file(root):
    make_yolo(root)
    (root / "labels" / "a.txt").unlink()
    return root


def csv_with_missing_image(root):
    table = make_csv(root)
    (root / "images" / "b.jpg").unlink()
    return table


def arrays_with_inverted_box(_):
    return (
        [np.zeros((4, 4), np.uint8)],
        [{"boxes": [(3, 3, 1, 1), (0, 0, 2, 2)], "labels": [0, 0]}],
    )


@pytest.mark.parametrize(
    "make, reported",
    [
        (
            csv_with_bad_rows,
            [
                "line 6 has no image path, dropped",
                "line 7 has missing or non-numeric box values, dropped",
                "line 8 has a box without a class, dropped",
            ],
        ),
        (voc_with_bad_object, ["object 1 lacks a name or a numeric bndbox, dropped"]),
        (yolo_without_label_file, ["no label file, its image kept as a negative"]),
        (csv_with_missing_image, ["image file not found, skipped"]),
        (arrays_with_inverted_box, ["box 0: inverted box (x2 < x1 or y2 < y1), dropped"]),
    ],
    ids=lambda case: getattr(case, "__name__", ""),
)
def test_strict_turns_each_report_into_an_error(tmp_path, make, reported):
    data = make(tmp_path)
    assert [what for _, what in load_box_source(data).problems] == reported
    first = reported[0].rsplit(", ", 1)[0]
    with pytest.raises(DataError, match=f": {re.escape(first)}; fix it, or leave strict mode off"):
        load_box_source(data, strict=True)
