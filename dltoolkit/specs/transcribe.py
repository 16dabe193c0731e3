"""Transcribe speech: `SpeechRecognizer`'s parameters and its `dltoolkit transcribe` verb."""

from __future__ import annotations

from dataclasses import dataclass

from dltoolkit.core.config import TrainConfig
from dltoolkit.core.params import param
from dltoolkit.registry import STRICT, RecipeSpec

MODELS = ("auto", "transformer", "ctc", "pretrained")
TOKENS = ("characters", "wordpiece")
LONG_CLIPS = ("skip", "refuse", "cut")
SPEECH_DECODINGS = ("greedy", "beam")


@dataclass
class SpeechRecognizerConfig(TrainConfig):
    """Parameters of SpeechRecognizer (see the README's 'transcribe speech' section)."""

    epochs: int | None = param(
        None,
        "Training epochs (default: about 500 optimizer steps, at least 3 epochs; with "
        "train_minutes, until the time is up).",
        ge=1,
        cli=True,
    )
    batch_size: int = param(32, "Global batch size (split across replicas).", ge=1, cli=True)
    learning_rate: float = param(
        1e-3, "Peak learning rate (warmup then the schedule).", gt=0, cli=True
    )
    warmup_epochs: float = param(1.0, "Linear warmup, in epochs.", ge=0)
    early_stopping_patience: int = param(
        10, "Stop after this many epochs without a better validation loss (0: never).", ge=0
    )
    model: str = param(
        "auto",
        "auto (transformer, or pretrained with --preset), transformer (Whisper-style "
        "encoder-decoder), ctc (convolutional + recurrent, the fast baseline) or pretrained.",
        choices=MODELS,
        cli=True,
    )
    preset: str | None = param(
        None,
        "Fine-tune a KerasHub speech model: a preset name (moonshine_tiny_en, whisper_tiny_en; "
        "downloads), a kaggle:// or hf:// handle, or a local preset directory.",
        cli=True,
    )
    audio_field: str | None = param(
        None,
        "Column holding the audio paths (default: path, audio, file, filename, wav).",
        cli=True,
    )
    text_field: str | None = param(
        None, "Column holding the transcripts (default: text, transcript, sentence).", cli=True
    )
    group_field: str | None = param(
        None,
        "Column naming each clip's speaker or group, for the per-group breakdown (default: "
        "speaker, speaker_id, group, client_id).",
        cli=True,
    )
    strict: bool = param(
        False,
        "Fail on unreadable audio, empty transcripts or characters outside the vocabulary "
        "instead of leaving them out.",
        cli=True,
    )
    tfds_data_dir: str | None = param(
        None,
        "tensorflow-datasets data_dir for --data tfds:NAME (default TFDS_DATA_DIR; never "
        "downloads).",
        cli=True,
    )
    val_split: float = param(0.1, "Share of the clips for validation.", ge=0, lt=1)
    test_split: float = param(0.1, "Share of the clips for the final test.", ge=0, lt=1)
    sample_rate: int = param(
        16000, "The model's sample rate; audio at any other rate is resampled to it.", ge=4000
    )
    max_seconds: float = param(
        20.0,
        "The model's window: longest clip trained on, and the chunk length of longer "
        "recordings in predict (fixed when the model is built).",
        gt=0,
        cli=True,
    )
    long_clips: str = param(
        "skip",
        "Training clips longer than max_seconds: skip (left out, listed in the report), refuse "
        "(an error) or cut (audio cut to the window, transcript kept).",
        choices=LONG_CLIPS,
        cli=True,
    )
    case_and_punctuation: bool = param(
        False,
        "Train on transcripts as written; by default they are lower-cased and stripped of "
        "punctuation (the normalisation WER is scored after).",
    )
    tokens: str = param(
        "characters",
        "transformer: decode characters, or a WordPiece vocabulary learned on the transcripts.",
        choices=TOKENS,
    )
    vocabulary_size: int = param(1000, "wordpiece: vocabulary size (at most).", ge=16)
    n_mels: int = param(80, "Mel bands of the log-mel front end.", ge=8)
    spec_augment: bool = param(True, "Time and frequency masking of the features in training.")
    d_model: int = param(192, "transformer: model width (divisible by heads).", ge=8)
    layers: int = param(3, "transformer: encoder layers, and as many decoder layers.", ge=1)
    heads: int = param(4, "transformer: attention heads.", ge=1)
    ff_dim: int = param(768, "transformer: feed-forward width.", ge=8)
    rnn_units: int = param(192, "ctc: units of each recurrent direction.", ge=8)
    rnn_layers: int = param(2, "ctc: bidirectional recurrent layers.", ge=1)
    dropout: float = param(0.1, "Dropout.", ge=0, lt=1)
    label_smoothing: float = param(
        0.1, "transformer: label smoothing of the token loss.", ge=0, lt=1
    )
    decoding: str = param(
        "greedy", "greedy (default) or beam search.", choices=SPEECH_DECODINGS, cli=True
    )
    beams: int = param(4, "beam: beams kept.", ge=1, cli=True)
    max_tokens: int = param(128, "Longest transcript decoded per window, in tokens.", ge=4)
    train_minutes: float | None = param(
        None, "Stop training after this many minutes.", gt=0, cli=True
    )
    report_examples: int = param(6, "Worst test clips shown with spectrograms in the report.", ge=0)


SPEC = RecipeSpec(
    task="transcribe",
    recipe="dltoolkit.tasks.speech_recognizer:SpeechRecognizer",
    config=SpeechRecognizerConfig,
    summary="Train a speech recogniser (Whisper-style or CTC from scratch, or a KerasHub preset).",
    default_data="synth-digits",
    data_help="Data: a folder of audio + transcripts.tsv, a LibriSpeech folder, a JSONL/CSV "
    "table, tfds:NAME or a built-in name (`dltoolkit datasets`).",
    predict_options=(STRICT,),
    evaluate_options=(),
)
