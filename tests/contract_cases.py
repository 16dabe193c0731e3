"""Every recipe's tiny case: what the suite trains once and test_contract.py checks.

A recipe registers itself by its `task`; test_contract.py then fails until CASES holds a
Case under that task. A Case says how to train the recipe on tiny data, which raw inputs to
predict on, and how the exported `serving_default` signature (and, once issue 20 lands,
the saved Keras model) takes those same inputs and answers with predict's numbers.

The fit is the one the recipe's own test file asserts learning on (conftest's `fits`
trains each case once per session), so its parameters are what those tests need.
"""

from __future__ import annotations

import dataclasses
from collections.abc import Callable
from pathlib import Path
from typing import Any

import keras
import numpy as np
import pandas as pd
from conftest import write_digit_folder
from PIL import Image
from test_agent import CARTPOLE_STEPS
from test_anomaly_detector import FAST, sensor_table
from test_forecaster import HORIZON, LOOKBACK
from test_image_generator import TINY as TINY_GENERATOR
from test_image_segmenter import TINY as TINY_SEGMENTER
from test_image_segmenter import squares, write_square_folder
from test_node_classifier import write_block_graph
from test_object_detector import TINY as TINY_DETECTOR
from test_object_detector import shapes, write_yolo_folder
from test_speech_recognizer import TINY as TINY_RECOGNIZER
from test_speech_recognizer import melody, tone, write_tone_folder, write_wav
from test_summarizer import TINY as TINY_SUMMARIZER
from test_summarizer import make_pairs, write_jsonl
from test_text_classifier import TINY as TINY_TEXT_CLASSIFIER
from test_text_classifier import write_reviews
from test_text_generator import TINY as TINY_TEXT_GENERATOR
from test_text_generator import write_songs

from dltoolkit.data.samples import load_sample


def registered_recipes() -> dict[str, type]:
    """Task name -> recipe class, as the registry lists them."""
    from dltoolkit.registry import specs

    return {task: spec.recipe_class() for task, spec in specs().items()}


@dataclasses.dataclass(frozen=True)
class KerasIO:
    """What the saved Keras model takes raw and what predict says it should answer."""

    raw: Any
    expected: np.ndarray
    decode: Callable[[Any], np.ndarray] = keras.ops.convert_to_numpy  # output -> expected's terms


@dataclasses.dataclass(frozen=True)
class Case:
    """One recipe's tiny contract case (see the module docstring)."""

    params: dict  # tiny training parameters
    data: Callable[[Path], Any]  # a scratch folder -> training data
    inputs: Callable[[Path], Any]  # a scratch folder -> raw inputs
    answers: Callable[[Any, Any], dict[str, np.ndarray]]  # (recipe, inputs) -> predict's numbers
    feeds: Callable[[Any, Any], dict[str, np.ndarray]]  # the inputs as serving_default takes them
    signatures: tuple[str, ...] = ("serving_default",)  # every signature the export has
    served: Callable[[dict], dict] = dict  # serving_default's outputs -> answers' names and terms
    keras_io: Callable[[Any, Any], KerasIO] | None = None  # None: no raw-input Keras model
    serving_imports: tuple[str, ...] = ()  # what the serving process imports besides tensorflow


def _column(rows: list[dict], key: str) -> np.ndarray:
    return np.array([r[key] for r in rows])


# -- classify ---------------------------------------------------------------------------


def _digit_files(folder: Path) -> list[str]:
    root = write_digit_folder(folder / "images", classes=(1, 7), per_class=4, size=8)
    return sorted(str(p) for p in root.rglob("*.*"))


def _pixels(files: list[str]) -> np.ndarray:
    return np.stack([np.asarray(Image.open(f).convert("L"))[..., None] for f in files])


CLASSIFY = Case(
    params=dict(epochs=6, batch_size=64, seed=1),
    data=lambda folder: "digits",
    inputs=_digit_files,
    answers=lambda clf, files: {
        "label": _column(clf.predict(files), "label"),
        "probabilities": clf.predict_proba(files),
    },
    feeds=lambda clf, files: {
        "image_bytes": np.array([Path(f).read_bytes() for f in files], dtype=object)
    },
    signatures=("predict_images", "serving_default"),
    keras_io=lambda clf, files: KerasIO(_pixels(files), clf.predict_proba(_pixels(files))),
)


# -- forecast ---------------------------------------------------------------------------


def _forecast_answers(model, frames) -> dict:
    rows = model.predict(frames)
    steps, targets = model.config.horizon, model.targets_
    forecast = np.array([[r[t] for t in targets] for r in rows]).reshape(-1, steps, len(targets))
    quantiles = np.array(
        [[[r[f"{t}_q{q:g}"] for q in model.levels] for t in targets] for r in rows]
    ).reshape(-1, steps, len(targets), len(model.levels))
    return {"forecast": forecast, "quantiles": quantiles}


def _windows(model, frames) -> np.ndarray:
    lookback = model.config.lookback
    return np.stack([f[model.inputs_].to_numpy(np.float32)[-lookback:] for f in frames])


FORECAST = Case(
    params=dict(
        lookback=LOOKBACK,
        horizon=HORIZON,
        epochs=6,
        layers=1,
        seed=1,
        quantiles="0.1,0.5,0.9",
        learning_rate=3e-3,
    ),
    data=lambda folder: "co2",
    inputs=lambda folder: [load_sample("co2").iloc[:n] for n in (800, 1900)],
    answers=_forecast_answers,
    feeds=lambda model, frames: {"window": _windows(model, frames)},
    keras_io=lambda model, frames: KerasIO(
        _windows(model, frames),
        _forecast_answers(model, frames)["forecast"],
        decode=lambda output: keras.ops.convert_to_numpy(output["forecast"]),
    ),
)


# -- detect-anomalies -------------------------------------------------------------------


def _readings(folder: Path) -> pd.DataFrame:
    frame = sensor_table(rows=8, seed=3)
    frame.loc[5:, "temp"] -= 25.0  # three faulty readings
    return frame


def _columns(detector, frame) -> dict[str, np.ndarray]:
    names = detector.signature_inputs()
    return {
        names[c]: (
            frame[c].astype(str).to_numpy(object)
            if c in detector.schema_.categorical
            else frame[c].to_numpy(np.float32)
        )
        for c in detector.columns_
    }


DETECT_ANOMALIES = Case(
    params=dict(FAST, contamination=0.1, val_split=0, test_split=0),
    data=lambda folder: sensor_table(),
    inputs=_readings,
    answers=lambda detector, frame: {
        "score": _column(detector.predict(frame), "score"),
        "anomaly": _column(detector.predict(frame), "anomaly"),
        "contributions": detector.score(frame)["contributions"],
    },
    feeds=_columns,
    keras_io=lambda detector, frame: KerasIO(
        _columns(detector, frame),
        _column(detector.predict(frame), "score"),
        decode=lambda out: keras.ops.convert_to_numpy(out["score"]),
    ),
)


# -- classify-nodes ---------------------------------------------------------------------


def _subgraph(folder: Path) -> tuple[str, str]:
    """Every other node of a fresh block graph and the edges among them: an unseen graph."""
    nodes, edges = (
        pd.read_csv(p, keep_default_na=False)
        for p in write_block_graph(folder / "new", seed=1, size=10)
    )
    sub = nodes.iloc[::2].drop(columns="label")
    kept = edges[edges.source.isin(sub.id) & edges.target.isin(sub.id)]
    sub.to_csv(folder / "sub_nodes.csv", index=False)
    kept.to_csv(folder / "sub_edges.csv", index=False)
    return str(folder / "sub_nodes.csv"), str(folder / "sub_edges.csv")


def _graph_arrays(clf, tables) -> dict[str, np.ndarray]:
    nodes, edges = (pd.read_csv(p, keep_default_na=False) for p in tables)
    position = {node: i for i, node in enumerate(nodes.id)}
    return {
        "node_features": nodes.drop(columns="id").to_numpy(np.float32),
        "edges": edges.map(position.get).to_numpy(np.int64),
    }


def _node_probabilities(clf, tables) -> np.ndarray:
    graph = clf.load_graph(tables, class_names=clf.class_names_, labelled=False)
    return clf.predict_proba(graph)


CLASSIFY_NODES = Case(
    params=dict(epochs=60, seed=0),
    data=lambda folder: str(write_block_graph(folder / "graph")[0].parent),  # nodes.csv, edges.csv
    inputs=_subgraph,
    answers=lambda clf, tables: {
        "label": _column(clf.predict(nodes=tables[0], edges=tables[1]), "label"),
        "score": _column(clf.predict(nodes=tables[0], edges=tables[1]), "probability"),
        "probabilities": _node_probabilities(clf, tables),
    },
    feeds=_graph_arrays,
    signatures=("predict_weighted", "serving_default"),
    keras_io=lambda clf, tables: KerasIO(
        _graph_arrays(clf, tables), _node_probabilities(clf, tables)
    ),
)


# -- summarize --------------------------------------------------------------------------


def _stories(folder: Path) -> list[str]:
    """Short stories and one longer than the model's input (truncated alike everywhere)."""
    return [r["article"] for r in make_pairs(3, seed=11)] + ["word " * 300]


def _pairs_file(folder: Path) -> str:
    """360 stories and two empty pairs (skipped), as JSON lines."""
    empty = [
        {"article": " ", "highlights": "nothing ."},
        {"article": "a story .", "highlights": ""},
    ]
    return write_jsonl(folder / "pairs.jsonl", make_pairs(360) + empty)


def _summaries(model, texts) -> np.ndarray:
    return np.array([r["summary"] for r in model.predict(text=texts)], dtype=object)


def _summary_logits(model, texts) -> KerasIO:
    """Strings through the tokenizer saved in model.keras, with BOS + the summary predict's
    greedy loop makes, give the logits the recipe's own ids and network give."""
    import tensorflow as tf

    from dltoolkit.tasks.summarizer import BOS, PAD, summary_ids

    loaded = keras.saving.load_model(model.run_.model_file)
    source = tf.function(loaded.source_ids)(tf.constant(texts)).to_tensor(PAD)
    own_source = tf.function(model.model_.source_ids)(tf.constant(texts)).to_tensor(PAD)
    greedy = model._decoding("greedy")
    ids = summary_ids(model.model_, own_source, model._sampler(greedy), greedy.max_length)
    target = tf.concat([tf.fill([len(texts), 1], BOS), ids], axis=1).numpy()
    expected = model.model_({"source": own_source, "target": target})
    return KerasIO(
        {"source": source.numpy(), "target": target}, keras.ops.convert_to_numpy(expected)
    )


SUMMARIZE = Case(
    params=dict(TINY_SUMMARIZER, text_field="article", summary_field="highlights", epochs=10),
    data=_pairs_file,
    inputs=_stories,
    answers=lambda model, texts: {"summary": _summaries(model, texts)},
    feeds=lambda model, texts: {"text": np.array(texts, dtype=object)},
    keras_io=_summary_logits,
    serving_imports=("tensorflow_text",),
)


# -- train-agent ------------------------------------------------------------------------


def _observations(folder: Path) -> np.ndarray:
    return np.random.default_rng(0).normal(0, 0.5, (16, 4)).astype(np.float32)


TRAIN_AGENT = Case(
    params=dict(
        env="CartPole-v1",
        algo="ppo",
        steps=CARTPOLE_STEPS,
        eval_every=4096,
        eval_episodes=10,
        seed=3,
    ),
    data=lambda folder: None,
    inputs=_observations,
    answers=lambda agent, obs: {
        "actions": _column(agent.predict(obs), "action"),
        "probabilities": _column(agent.predict(obs), "probabilities"),
    },
    feeds=lambda agent, obs: {"observation": obs},
    keras_io=lambda agent, obs: KerasIO(
        obs,
        _column(agent.predict(obs), "probabilities"),
        lambda outputs: keras.ops.convert_to_numpy(outputs["probabilities"]),
    ),
)


# -- segment ----------------------------------------------------------------------------


def _scans(folder: Path) -> list[str]:
    """Three images of two sizes (one RGB), unlike the training images' size."""
    images, _ = squares(3, size=(40, 52), seed=8)
    paths = []
    for i, image in enumerate(images):
        path = folder / f"scan{i}.png"
        picture = Image.fromarray(image[..., 0])
        picture = picture.crop((0, 0, 47, 33)) if i == 2 else picture
        (picture.convert("RGB") if i == 1 else picture).save(path)
        paths.append(str(path))
    return paths


def _padded_masks(masks: list[np.ndarray]) -> np.ndarray:
    """Masks of several sizes stacked as the export returns them: padded with the ignore index."""
    height, width = (max(m.shape[i] for m in masks) for i in (0, 1))
    return np.stack(
        [
            np.pad(m, [(0, height - m.shape[0]), (0, width - m.shape[1])], constant_values=255)
            for m in masks
        ]
    )


def _segment_answers(seg, files) -> dict:
    masks = seg.predict_masks(files)
    return {
        "mask": _padded_masks(masks),
        "height": np.array([m.shape[0] for m in masks], np.int32),
        "probabilities": seg.predict_proba(files),
    }


def _decoded_color_masks(outputs: dict) -> dict:
    import tensorflow as tf

    colors = [tf.io.decode_png(p).numpy() for p in outputs["color_png"]]
    assert all(c.shape[-1] == 3 for c in colors)
    return {**outputs, "height": np.array([c.shape[0] for c in colors], np.int32)}


def _square_pixels(folder: Path) -> np.ndarray:
    return squares(2, size=(40, 52), seed=8)[0]


SEGMENT = Case(
    params=TINY_SEGMENTER,
    data=lambda folder: str(write_square_folder(folder / "squares")),
    inputs=_scans,
    answers=_segment_answers,
    feeds=lambda seg, files: {
        "image_bytes": np.array([Path(f).read_bytes() for f in files], dtype=object)
    },
    served=_decoded_color_masks,
    keras_io=lambda seg, files: KerasIO(
        _square_pixels(Path()), seg.predict_proba(_square_pixels(Path()))
    ),
)


# -- detect objects ---------------------------------------------------------------------


def _photos(folder: Path) -> list[str]:
    """Three images of other sizes than the training images' (one RGB, one JPEG)."""
    images = shapes(3, size=(70, 90), seed=8)[0]
    paths = []
    for i, image in enumerate(images):
        path = folder / f"photo{i}.{'jpg' if i == 2 else 'png'}"
        picture = Image.fromarray(image[..., 0])
        (picture.convert("RGB") if i == 1 else picture).save(path)
        paths.append(str(path))
    return paths


def _padded_rows(rows: list[dict], key: str, fill, width: int) -> np.ndarray:
    """One predict field of every row, padded to the export's `width` detections."""
    return np.array([list(r[key]) + [fill] * (width - len(r[key])) for r in rows])


def _detect_answers(det, files) -> dict:
    rows, width = det.predict(files), det.config.max_detections
    return {
        "boxes": _padded_rows(rows, "boxes", [0.0] * 4, width),
        "scores": _padded_rows(rows, "scores", 0.0, width),
        "classes": _padded_rows(rows, "classes", -1, width),
        "count": np.array([r["count"] for r in rows], np.int32),
    }


def _confident_boxes(boxes, scores, threshold: float) -> np.ndarray:
    """Per image, the boxes scored clearly above `threshold`, rows sorted: a score within
    float noise of the threshold, or a tie in score order, cannot flip the comparison."""
    kept = [b[s > threshold + 1e-3] for b, s in zip(boxes, scores, strict=True)]
    width = max(len(k) for k in kept)
    return np.array([np.pad(k[np.lexsort(k.T[::-1])], ((0, width - len(k)), (0, 0))) for k in kept])


def _detect_keras_io(det, files) -> KerasIO:
    """The saved network maps letterboxed pixels to anchor outputs: decoded, the boxes predict
    gives for square images of the input size (whose letterbox changes nothing)."""
    from dltoolkit.models.detection import decode_detections

    pixels = shapes(2, size=(64, 64), seed=8)[0]
    c = det.config
    answers = _detect_answers(det, pixels)

    def decode(out):
        found = decode_detections(
            out,
            64,
            score_threshold=c.score_threshold,
            iou_threshold=c.nms_iou,
            max_detections=c.max_detections,
        )
        return _confident_boxes(found["boxes"].numpy(), found["scores"].numpy(), c.score_threshold)

    return KerasIO(
        pixels.astype(np.float32),
        _confident_boxes(answers["boxes"], answers["scores"], c.score_threshold),
        decode=decode,
    )


DETECT_OBJECTS = Case(
    params=TINY_DETECTOR,
    data=lambda folder: str(write_yolo_folder(folder / "shapes")),
    inputs=_photos,
    answers=_detect_answers,
    feeds=lambda det, files: {
        "image_bytes": np.array([Path(f).read_bytes() for f in files], dtype=object)
    },
    signatures=("serving_default", "detect_with_thresholds"),
    served=lambda outputs: {k: v for k, v in outputs.items() if k != "labels"},
    keras_io=_detect_keras_io,
)


# -- generate ---------------------------------------------------------------------------

DRAW = {"num": 6, "seed": 5, "label": "3"}


def _decoded_png(outputs: dict) -> dict:
    import tensorflow as tf

    pngs = [tf.io.decode_png(p).numpy() for p in outputs["png"]]
    return {"images": outputs["images"], "png": np.stack(pngs)}


GENERATE = Case(
    params=dict(
        TINY_GENERATOR,
        model="ddpm",
        conditional=True,
        blocks=1,
        timesteps=200,
        sample_steps=6,
        learning_rate=2e-3,
    ),
    data=lambda folder: "digits",
    inputs=lambda folder: DRAW,
    # The export draws with the same seeded graph as `sample`: the same images, bit for bit.
    answers=lambda gen, draw: {"images": (s := gen.sample(**draw)), "png": s},
    feeds=lambda gen, draw: {
        "batch_size": np.int32(draw["num"]),
        "seed": np.int64(draw["seed"]),
        "labels": np.array([gen.class_names_.index(draw["label"])], np.int32),
    },
    served=_decoded_png,
    # generate has no raw input: its Keras model maps noise to images, as it should.
    keras_io=None,
)


# -- transcribe -------------------------------------------------------------------------


def _recordings(folder: Path) -> list[str]:
    """16-bit PCM WAVs, as the export decodes them: one at the model's rate, one at 16 kHz
    (resampled) and one three windows long (transcribed in chunks)."""
    rng = np.random.default_rng(8)
    return [
        write_wav(folder / "mi.wav", tone("mi", rng)),
        write_wav(folder / "do_16k.wav", tone("do", rng, 16000), 16000),
        write_wav(folder / "melody.wav", melody(["re", "do", "mi"])),
    ]


def _transcripts(recognizer, files) -> dict:
    return {"text": np.array([r["text"] for r in recognizer.predict(files)], dtype=object)}


def _next_characters(recognizer, files) -> KerasIO:
    """Fed the short recordings' waves and predict's transcripts after BOS (teacher forcing),
    the saved model's most likely next tokens are those transcripts' characters, then EOS."""
    import tensorflow as tf

    from dltoolkit.data.audio import read_audio
    from dltoolkit.data.waveforms import pad_batch, resample
    from dltoolkit.models.transcription import BOS, EOS, PAD

    short = files[:2]
    rate = recognizer.config.sample_rate
    waves, lengths = pad_batch([resample(*read_audio(f), rate) for f in short])
    texts = list(_transcripts(recognizer, short)["text"])
    ids = recognizer.model_.tokenizer(tf.constant(texts)).to_tensor(PAD).numpy()
    target = np.concatenate([np.full((len(ids), 1), BOS), ids], axis=1)
    expected = np.pad(ids, [(0, 0), (0, 1)], constant_values=PAD)
    expected[np.arange(len(ids)), (ids != PAD).sum(axis=1)] = EOS
    spoken = expected != PAD
    return KerasIO(
        {"waves": waves.numpy(), "lengths": lengths.numpy(), "target": target.astype(np.int32)},
        expected,
        decode=lambda logits: np.where(
            spoken, np.argmax(keras.ops.convert_to_numpy(logits), axis=-1), PAD
        ),
    )


TRANSCRIBE = Case(
    params=TINY_RECOGNIZER,
    data=lambda folder: str(write_tone_folder(folder / "clips")),
    inputs=_recordings,
    answers=_transcripts,
    feeds=lambda recognizer, files: {
        "audio": np.array([Path(f).read_bytes() for f in files], dtype=object)
    },
    keras_io=_next_characters,
)


# -- classify-text ----------------------------------------------------------------------

REVIEWS = [
    "the plot was wonderful.",
    "honestly, the acting was not good",
    "the score seemed charming but tedious!",
    "?",
    "not bad",
]


def _text_answers(model, texts) -> dict:
    rows = model.predict(text=texts)
    return {
        "label": _column(rows, "label").astype(object),
        "score": _column(rows, "score"),
        "probabilities": np.array([list(r["probabilities"].values()) for r in rows]),
    }


def _text_probabilities(model, texts) -> KerasIO:
    return KerasIO(np.array(texts, dtype=object), model.predict_proba(texts))


CLASSIFY_TEXT = Case(
    params=dict(TINY_TEXT_CLASSIFIER, text_field="review", label_field="stars"),
    data=lambda folder: str(write_reviews(folder / "reviews.csv")),
    inputs=lambda folder: REVIEWS,
    answers=_text_answers,
    feeds=lambda model, texts: {"text": np.array(texts, dtype=object)},
    keras_io=_text_probabilities,
    serving_imports=("tensorflow_text",),
)


# -- generate-text ----------------------------------------------------------------------

PROMPTS = ["Five green bottles", "", "Two little ducks swimming in the pond,\n"]
SAMPLING = {"max_new_tokens": 24, "temperature": 0.8, "top_p": 0.9, "seed": 7}
SAMPLING_TYPES = {"max_new_tokens": np.int32, "temperature": np.float32, "top_p": np.float32}


def _generated(model, prompts) -> dict:
    rows = model.predict(text=prompts, **SAMPLING)
    return {"text": np.array([r["text"] for r in rows], dtype=object)}


def _prompt_logits(model, prompts) -> KerasIO:
    """Prompt ids made by the tokenizer saved in model.keras give the recipe's logits."""
    import tensorflow as tf

    loaded = keras.saving.load_model(model.run_.model_file)
    ids, _ = tf.function(loaded.prompt_ids)(tf.constant(prompts))
    own, _ = tf.function(model.model_.prompt_ids)(tf.constant(prompts))
    return KerasIO(ids.numpy(), keras.ops.convert_to_numpy(model.model_(own)))


GENERATE_TEXT = Case(
    params=TINY_TEXT_GENERATOR,
    data=lambda folder: str(write_songs(folder / "songs.jsonl")),
    inputs=lambda folder: PROMPTS,
    answers=_generated,
    feeds=lambda model, prompts: {
        "text": np.array(prompts, dtype=object),
        **{k: SAMPLING_TYPES.get(k, np.int32)(v) for k, v in SAMPLING.items()},
    },
    keras_io=_prompt_logits,
)


CASES: dict[str, Case] = {
    "classify": CLASSIFY,
    "forecast": FORECAST,
    "detect-anomalies": DETECT_ANOMALIES,
    "classify-nodes": CLASSIFY_NODES,
    "summarize": SUMMARIZE,
    "train-agent": TRAIN_AGENT,
    "generate": GENERATE,
    "segment": SEGMENT,
    "detect-objects": DETECT_OBJECTS,
    "transcribe": TRANSCRIBE,
    "classify-text": CLASSIFY_TEXT,
    "generate-text": GENERATE_TEXT,
}
