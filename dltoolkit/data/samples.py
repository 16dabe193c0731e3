"""Built-in sample data sets that ship inside dependencies, so they work offline.

`SAMPLES` is a registry: each entry has a `kind` and a loader. An "images" loader returns
`(images uint8 (N, H, W, C), labels int (N,), class_names)`; a "segmentation" loader returns
`(images uint8 (N, H, W, C), masks uint8 (N, H, W) of class indices, class_names)`; a "detection"
loader returns `(images uint8 (N, H, W, C), boxes: list of float32 (n_i, 4) x1 y1 x2 y2 in
pixels, labels: list of int32 (n_i,) class indices, class_names)`; a "series"
loader returns a DataFrame with a time column and numeric columns; a "table" loader returns
`(DataFrame, label column)`; a "graph" loader returns a networkx graph with a "label" per node;
a "speech" loader returns `(waves: list of float32 (n_i,) mono in [-1, 1], sample rate int,
transcripts: list of str, speakers: list of str)`; a "text" loader returns `(texts: list of str,
labels: list of str)`; a "corpus" loader returns documents (list of str).
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass

import numpy as np
import pandas as pd

from dltoolkit.core.errors import DataError


@dataclass(frozen=True)
class Sample:
    description: str
    loader: Callable[[], tuple]
    kind: str = "images"


def _digits() -> tuple[np.ndarray, np.ndarray, list[str]]:
    from sklearn.datasets import load_digits

    bunch = load_digits()
    images = np.round(bunch.images * (255.0 / 16.0)).astype(np.uint8)[..., None]
    return images, bunch.target.astype(np.int32), [str(d) for d in range(10)]


def _digit_scenes() -> tuple[np.ndarray, np.ndarray, list[str]]:
    """The seeded digit scenes (`_digit_layout`). Mask: the digit + 1 where its ink is above
    40% of its maximum, 0 ("background") elsewhere."""
    images, placed = _digit_layout()
    masks = np.zeros(images.shape[:3], np.uint8)
    for mask, digits in zip(masks, placed, strict=True):
        for digit, top, left, ink in digits:
            mask[top : top + ink.shape[0], left : left + ink.shape[1]][ink] = digit + 1
    return images, masks, ["background"] + [str(d) for d in range(10)]


def _digit_boxes() -> tuple[np.ndarray, list[np.ndarray], list[np.ndarray], list[str]]:
    """The seeded digit scenes (`_digit_layout`). Box: x1, y1, x2, y2 in pixels, the tight box of
    the pixels where the digit's ink is above 40% of its maximum."""
    images, placed = _digit_layout()
    boxes, labels = [], []
    for digits in placed:
        boxes.append(
            np.array([_ink_box(top, left, ink) for _, top, left, ink in digits], np.float32)
        )
        labels.append(np.array([digit for digit, *_ in digits], np.int32))
    return images, boxes, labels, [str(d) for d in range(10)]


def _ink_box(top: int, left: int, ink: np.ndarray) -> list[int]:
    rows, cols = np.flatnonzero(ink.any(axis=1)), np.flatnonzero(ink.any(axis=0))
    return [left + cols[0], top + rows[0], left + cols[-1] + 1, top + rows[-1] + 1]


def _digit_layout() -> tuple[np.ndarray, list[list[tuple[int, int, int, np.ndarray]]]]:
    """1,200 seeded 64x64 scenes of 1-3 digits (scikit-learn's, upscaled x3 bilinear), one per
    32x32 quarter so they never overlap, on a lightly noisy background: the images uint8
    (N, 64, 64, 1) and per scene its digits as (digit, top, left, ink mask (24, 24) bool),
    the mask true where the ink is above 40% of its maximum."""
    from sklearn.datasets import load_digits

    bunch = load_digits()
    up = _bilinear_matrix(8, 3)
    digits = np.einsum("ij,njk,lk->nil", up, bunch.images / 16.0, up)  # (1797, 24, 24) in [0, 1]
    rng = np.random.default_rng(0)
    canvas = rng.normal(20.0, 6.0, (1200, 64, 64))
    placed = []
    for scene in canvas:
        placed.append([])
        for quarter in rng.permutation(4)[: rng.integers(1, 4)]:
            pick = rng.integers(len(digits))
            top, left = 32 * (quarter // 2) + rng.integers(9), 32 * (quarter % 2) + rng.integers(9)
            box = np.s_[top : top + 24, left : left + 24]
            ink = digits[pick]
            scene[box] = np.maximum(scene[box], 255.0 * ink)
            placed[-1].append((int(bunch.target[pick]), int(top), int(left), ink > 0.4 * ink.max()))
    images = np.clip(np.round(canvas), 0, 255).astype(np.uint8)[..., None]
    return images, placed


def _bilinear_matrix(size: int, factor: int) -> np.ndarray:
    """(size * factor, size) weights of bilinear upscaling (half-pixel centres, clamped edges)."""
    source = np.clip((np.arange(size * factor) + 0.5) / factor - 0.5, 0, size - 1)
    low = np.minimum(np.floor(source).astype(int), size - 2)
    weight = source - low
    matrix = np.zeros((size * factor, size))
    rows = np.arange(size * factor)
    matrix[rows, low] = 1 - weight
    matrix[rows, low + 1] = weight
    return matrix


def _co2():
    """Weekly CO2 at Mauna Loa (statsmodels); its 59 gaps are interpolated in time."""
    from statsmodels.datasets import co2

    frame = co2.load_pandas().data.interpolate(method="time")
    return frame.rename_axis("week").reset_index()


def _sunspots():
    from statsmodels.datasets import sunspots

    frame = sunspots.load_pandas().data
    year = pd.to_datetime(frame["YEAR"].astype(int).astype(str), format="%Y")
    return pd.DataFrame({"year": year, "sunspots": frame["SUNACTIVITY"]})


def _karate():
    """Zachary's karate club (networkx): 34 members, 78 ties, labelled by the faction ("club")
    each joined after the split."""
    import networkx as nx

    graph = nx.karate_club_graph()
    for _, attrs in graph.nodes(data=True):
        attrs["label"] = attrs.pop("club")
    return graph


def _breast_cancer():
    """scikit-learn's breast cancer table: all 357 benign rows and 40 seeded malignant ones (10%)."""
    from sklearn.datasets import load_breast_cancer

    frame = load_breast_cancer(as_frame=True).frame
    frame["malignant"] = (frame.pop("target") == 0).astype(int)
    rare = frame[frame["malignant"] == 1].sample(n=40, random_state=0)
    return pd.concat([frame[frame["malignant"] == 0], rare]).sort_index().reset_index(
        drop=True
    ), "malignant"


DIGIT_WORDS = ("zero", "one", "two", "three", "four", "five", "six", "seven", "eight", "nine")
# Each letter of the digit words as a sound: three resonances (Hz) for the average voice and
# the share of it excited by noise rather than by the glottal pulses.
LETTER_SOUNDS = {
    "e": (400, 2200, 2900, 0.0),
    "i": (300, 2400, 3100, 0.0),
    "o": (520, 900, 2500, 0.0),
    "u": (330, 800, 2300, 0.0),
    "r": (450, 1250, 1650, 0.0),
    "n": (260, 1500, 2600, 0.0),
    "w": (300, 650, 2200, 0.0),
    "g": (350, 1100, 2100, 0.2),
    "v": (350, 1300, 3400, 0.4),
    "z": (250, 1800, 4400, 0.6),
    "x": (800, 1700, 4200, 0.7),
    "t": (700, 1900, 3700, 0.8),
    "h": (600, 1500, 3200, 0.9),
    "f": (900, 2100, 3900, 0.9),
    "s": (1200, 2600, 4800, 0.95),
}
# name, pitch (Hz), formant scale, seconds per letter
SYNTH_VOICES = (
    ("ava", 210.0, 1.15, 0.062),
    ("ben", 110.0, 0.92, 0.080),
    ("cora", 240.0, 1.20, 0.055),
    ("dan", 95.0, 0.87, 0.088),
    ("eli", 150.0, 1.00, 0.070),
    ("fay", 185.0, 1.08, 0.075),
)


def synthesize_digit_speech(
    count: int = 1200, seed: int = 0, rate: int = 16000
) -> tuple[list[np.ndarray], int, list[str], list[str]]:
    """`count` seeded clips of 1-3 digit words ("zero".."nine") spoken by the six synthetic
    `SYNTH_VOICES`: each letter a short formant sound (`LETTER_SOUNDS`), with short pauses
    between words, silence around them and a little noise. Clip i depends only on the seed
    and the clips before it. Returns (waves, rate, texts, speakers)."""
    rng = np.random.default_rng(seed)
    waves, texts, speakers = [], [], []
    for _ in range(count):
        name, *voice = SYNTH_VOICES[rng.integers(len(SYNTH_VOICES))]
        words = [DIGIT_WORDS[d] for d in rng.integers(10, size=rng.integers(1, 4))]
        parts = [np.zeros(int(rate * rng.uniform(0.05, 0.2)))]
        for word in words:
            parts += [_say(word, *voice, rng, rate), np.zeros(int(rate * rng.uniform(0.06, 0.15)))]
        parts.append(np.zeros(int(rate * rng.uniform(0.0, 0.1))))
        wave = np.concatenate(parts)
        wave += rng.normal(0.0, 0.003, len(wave))
        waves.append(np.clip(wave, -1.0, 1.0).astype(np.float32))
        texts.append(" ".join(words))
        speakers.append(name)
    return waves, rate, texts, speakers


def _say(word, pitch, scale, letter_seconds, rng, rate) -> np.ndarray:
    """One word: each letter's resonances excited by pulses at the voice's falling pitch (and
    by band noise for its noise share), gliding from letter to letter."""
    lengths = (rate * letter_seconds * rng.uniform(0.85, 1.15, len(word))).astype(int)
    ends = np.cumsum(lengths)
    starts = ends - lengths
    ramp = lengths // 4
    knots = np.ravel(np.column_stack([starts + ramp, ends - ramp]))
    sounds = np.repeat([LETTER_SOUNDS[c] for c in word], 2, axis=0)  # (2 * letters, 4)
    t = np.arange(ends[-1])
    formants = [
        np.interp(t, knots, sounds[:, k]) * scale * rng.uniform(0.97, 1.03) for k in range(3)
    ]
    noise_share = np.interp(t, knots, sounds[:, 3])
    f0 = pitch * rng.uniform(0.95, 1.05) * np.linspace(1.05, 0.9, len(t))
    cycle = np.cumsum(f0 / rate)
    since_pulse = (cycle - np.floor(cycle)) / f0  # seconds since the last glottal pulse
    noise = np.cumsum(rng.normal(size=len(t) + 8))
    band = (noise[8:] - noise[:-8]) / 8  # low-passed noise: each carrier becomes a noise band
    voiced = np.zeros(len(t))
    unvoiced = np.zeros(len(t))
    for amplitude, bandwidth, frequency in zip(
        (1.0, 0.6, 0.3), (80.0, 110.0, 150.0), formants, strict=True
    ):
        decay = np.exp(-np.pi * bandwidth * since_pulse)
        voiced += amplitude * decay * np.sin(2 * np.pi * frequency * since_pulse)
        unvoiced += amplitude * np.sin(2 * np.pi * np.cumsum(frequency) / rate) * band
    sound = (1 - noise_share) * voiced / 2 + noise_share * unvoiced
    edge = np.minimum(1.0, np.minimum(t + 1, len(t) - t) / (0.015 * rate))
    sound *= np.sin(0.5 * np.pi * edge) ** 2 * (1 - 0.4 * noise_share)
    return 0.4 * sound / np.abs(sound).max()


REVIEW_SUBJECTS = (
    "the film", "the plot", "the acting", "the soundtrack", "the ending", "this book",
    "the service", "the food", "the hotel", "the camera", "the battery", "the game",
)  # fmt: skip
REVIEW_WORDS = {
    "positive": ("good", "great", "wonderful", "charming", "brilliant", "lovely", "superb"),
    "negative": ("bad", "awful", "dull", "boring", "clumsy", "tedious", "disappointing"),
    "neutral": ("average", "ordinary", "okay", "adequate", "passable", "standard", "middling"),
}
REVIEW_ASIDES = ("", "", "", "honestly, ", "overall, ", "i think ", "to be fair, ")
REVIEW_ENDINGS = ("", "", "", " for the price", " in the end", " this time", " as expected")
# After "not": a positive word reads as negative, a negative one as neutral ("not bad").
NEGATED = {"positive": "negative", "negative": "neutral"}


def toy_reviews(count: int = 600, seed: int = 0) -> tuple[list[str], list[str]]:
    """`count` seeded one-line reviews labelled positive, negative or neutral, from word
    templates: "the plot was good"; negated, "the plot was not good" (negative) and "not bad"
    (neutral); or contrasted, "the plot was charming but tedious", where the word after
    "but" decides. Every sentiment word occurs in more than one class, so single words do not
    give the label away but word pairs do. Returns (texts, labels)."""
    rng = np.random.default_rng(seed)
    moods = list(REVIEW_WORDS)
    texts, labels = [], []
    for _ in range(count):
        subject = REVIEW_SUBJECTS[rng.integers(len(REVIEW_SUBJECTS))]
        form = rng.choice(["plain", "negated", "contrast"], p=[0.4, 0.3, 0.3])
        verb = ("was", "is", "felt", "seemed")[rng.integers(2 if form == "negated" else 4)]
        mood = moods[rng.integers(3)]
        if form == "negated":
            mood = moods[rng.integers(2)]
            words, label = f"not {_pick(REVIEW_WORDS[mood], rng)}", NEGATED[mood]
        elif form == "contrast":
            first = moods[rng.integers(3)]
            mood = next(m for m in rng.permutation(moods) if m != first)
            words = f"{_pick(REVIEW_WORDS[first], rng)} but {_pick(REVIEW_WORDS[mood], rng)}"
            label = mood
        else:
            adverb = ("", "", "very ", "really ", "quite ", "rather ")[rng.integers(6)]
            words, label = adverb + _pick(REVIEW_WORDS[mood], rng), mood
        aside = REVIEW_ASIDES[rng.integers(len(REVIEW_ASIDES))]
        ending = REVIEW_ENDINGS[rng.integers(len(REVIEW_ENDINGS))]
        texts.append(f"{aside}{subject} {verb} {words}{ending}")
        labels.append(str(label))
    return texts, labels


def _pick(words: tuple[str, ...], rng) -> str:
    return words[rng.integers(len(words))]


NUMBER_WORDS = ("no", "one", "two", "three", "four", "five", "six", "seven", "eight", "nine", "ten")
SONG_THINGS = (
    ("green bottle", "green bottles", "hanging on the wall", "should accidentally fall"),
    ("little duck", "little ducks", "swimming in the pond", "should fly away beyond"),
    ("speckled frog", "speckled frogs", "sitting on a log", "should jump into the bog"),
    ("cheeky monkey", "cheeky monkeys", "swinging in the tree", "should wander off to sea"),
    ("silver star", "silver stars", "shining in the sky", "should say goodnight, goodbye"),
    ("sleepy cat", "sleepy cats", "lying on the mat", "should chase away a rat"),
)


def counting_songs(count: int = 100, seed: int = 0) -> list[str]:
    """`count` seeded counting-down songs ("Ten green bottles"), one document each: a song
    counts from 3-10 things down to none, one verse a number, so a model that learns it
    has learned to count down and keep to one song's subject. Returns the documents."""
    rng = np.random.default_rng(seed)
    songs = []
    for _ in range(count):
        one, many, where, fall = SONG_THINGS[rng.integers(len(SONG_THINGS))]
        verses = []
        for n in range(int(rng.integers(3, 11)), 0, -1):
            things = f"{NUMBER_WORDS[n]} {one if n == 1 else many} {where}"
            left = f"{NUMBER_WORDS[n - 1]} {one if n == 2 else many}"
            verses.append(
                f"{things.capitalize()},\n{things},\nand if one {one} {fall},\n"
                f"there'll be {left} {where}."
            )
        songs.append("\n\n".join(verses))
    return songs


SAMPLES: dict[str, Sample] = {
    "digits": Sample("1,797 handwritten digits, 8x8 grayscale, 10 classes (scikit-learn)", _digits),
    "digit-scenes": Sample(
        "1,200 scenes of 1-3 handwritten digits with class masks, 64x64 grayscale, "
        "background + 10 digit classes (scikit-learn)",
        _digit_scenes,
        kind="segmentation",
    ),
    "digit-boxes": Sample(
        "the 1,200 digit scenes with a box around each digit (2,343 boxes), 64x64 grayscale, "
        "10 digit classes (scikit-learn)",
        _digit_boxes,
        kind="detection",
    ),
    "breast-cancer": Sample(
        "breast cancer cell measurements, 30 columns, 357 benign + 40 malignant "
        "(rare class, label 'malignant') (scikit-learn)",
        _breast_cancer,
        kind="table",
    ),
    "co2": Sample(
        "weekly CO2 (ppm) at Mauna Loa 1958-2001, 2,284 rows, gaps interpolated (statsmodels)",
        _co2,
        kind="series",
    ),
    "sunspots": Sample(
        "yearly sunspot numbers 1700-2008, 309 rows (statsmodels)", _sunspots, kind="series"
    ),
    "synth-digits": Sample(
        "1,200 synthesized utterances of 1-3 digit words ('zero'..'nine') by 6 synthetic "
        "voices, 16 kHz mono, transcripts and speakers (made with numpy)",
        synthesize_digit_speech,
        kind="speech",
    ),
    "toy-reviews": Sample(
        "600 one-line reviews from word templates with negation and contrast ('not good', "
        "'charming but tedious'), 3 classes: positive, negative, neutral (made with numpy)",
        toy_reviews,
        kind="text",
    ),
    "counting-songs": Sample(
        "100 counting-down songs ('Ten green bottles hanging on the wall'), six subjects, "
        "3-10 verses each, 122k characters (made with numpy)",
        counting_songs,
        kind="corpus",
    ),
    "karate": Sample(
        "Zachary's karate club graph, 34 nodes, 2 factions (networkx)", _karate, kind="graph"
    ),
}


def list_samples() -> list[tuple[str, str]]:
    """(name, one-line description) of every built-in sample, sorted by name."""
    return [(name, SAMPLES[name].description) for name in sorted(SAMPLES)]


def load_sample(name: str) -> tuple:
    """Load a built-in sample by name; an "images" sample gives (images, labels, class_names)."""
    if name not in SAMPLES:
        raise DataError(f"unknown sample {name!r}; available samples: {', '.join(sorted(SAMPLES))}")
    return SAMPLES[name].loader()
