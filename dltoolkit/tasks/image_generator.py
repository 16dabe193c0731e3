"""ImageGenerator: the generate-images recipe (VAE, DCGAN, WGAN-GP, DDPM with DDIM sampling)."""

from __future__ import annotations

import dataclasses
import math
from dataclasses import dataclass
from pathlib import Path

import keras
import numpy as np
import tensorflow as tf
from rich.console import Console

from dltoolkit.core.callbacks import TimeBudget
from dltoolkit.core.errors import ConfigError, DataError
from dltoolkit.core.export import Signature
from dltoolkit.core.optim import build_optimizer, learning_rate_schedule
from dltoolkit.core.recipe import Recipe
from dltoolkit.core.report import Report
from dltoolkit.core.runtime import REPLICATED, choose_strategy, one_process_strategy
from dltoolkit.core.training import Plan
from dltoolkit.data.images import (
    ImageSet,
    load_image_source,
    make_dataset,
    sampled_sizes,
    split_stratified,
)
from dltoolkit.models.diffusion import DDPM
from dltoolkit.models.generative import (
    GAN,
    ConvVAE,
    GenerativeModel,
    check_image_size,
    size_for_data,
    to_uint8,
)
from dltoolkit.specs.generate import LATENT_DIMS, LEARNING_RATES, MAX_NUM, SPEC, WIDTHS
from dltoolkit.tasks import generation_eval as quality
from dltoolkit.tasks.image_classifier import ImageClassifier
from dltoolkit.tasks.sample_grids import (
    SampleGrids,
    grids_over_time,
    image_rows,
    single_image,
    tile_images,
    write_png,
)

# Default training length in batches (small data gets more epochs). A DDPM step (a U-Net
# pass and its gradient) costs several VAE/GAN steps; 1,200 of them train the default DDPM
# on the digits sample to recognisable digits in about 3 minutes on 2 CPU cores.
STEP_BUDGETS = {"ddpm": 1200, "vae": 3000, "gan": 3000, "wgan-gp": 3000}
MAX_REAL = 10_000  # real images compared in evaluate
INTERPOLATION_STEPS = 10
GRIDS = 20  # default number of per-epoch sample grids in a run
GANS = ("gan", "wgan-gp")


@dataclass
class _Prepared:
    train: ImageSet
    held_out: ImageSet
    class_names: list[str]
    labelled: bool
    image_shape: tuple[int, int, int]
    description: str


class ImageGenerator(Recipe):
    """Generate images with a VAE, a GAN (DCGAN or WGAN-GP) or a diffusion model (DDPM).

    >>> gen = ImageGenerator(model="ddpm", image_size=16).fit("digits")
    >>> images = gen.sample(16, seed=1)          # uint8 (16, 16, 16, 1)
    """

    spec = SPEC
    learned = ("class_names_", "labelled_", "image_shape_")

    def __init__(self, **params):
        super().__init__(**params)
        self.class_names_: list[str] = []
        self.labelled_ = False
        self.image_shape_: tuple[int, int, int] | None = None
        self.evaluator_: ImageClassifier | None = None
        self._sampler = None

    # -- data -----------------------------------------------------------------------------

    def _validate(self) -> None:
        c = self.config
        if c.image_size is not None:
            check_image_size(c.image_size)
        if c.sample_steps > c.timesteps:
            raise ConfigError(
                f"sample_steps must be at most timesteps ({c.timesteps}), got {c.sample_steps}"
            )
        if (
            c.model == "wgan-gp"
            and c.critic_steps > 1
            and choose_strategy(c.strategy, c.tpu)[0] in REPLICATED
        ):
            raise ConfigError(
                f"wgan-gp with critic_steps={c.critic_steps} cannot train replicated (--strategy "
                f"{c.strategy}): its generator updates every Nth step, and tf.distribute cannot "
                "sum gradients inside that condition; use --set critic_steps=1 or --strategy cpu or gpu"
            )
        if c.model in GANS and c.early_stopping_patience > 0:
            raise ConfigError(
                f"{c.model} has no single loss to stop early by (d_loss and g_loss); "
                "drop early_stopping_patience"
            )
        quality.inception_weights_file(c.inception_weights)

    def _prepare(self, data, console) -> _Prepared:
        c = self.config
        source = load_image_source(
            data,
            strict=c.strict,
            path_col=c.path_col,
            label_col=c.label_col,
            tfds_data_dir=c.tfds_data_dir,
            unlabelled=True,
        )
        labelled = len(source.class_names) >= 2
        if c.conditional and not labelled:
            raise DataError(
                f"--conditional needs labelled images of at least two classes, but {source.description} "
                "has none; use one subfolder per class (or a label column), or drop --conditional"
            )
        train = source.splits["train"]
        held = source.splits.get("test") or source.splits.get("val")
        if held is None:
            split = (
                split_stratified(train, {"val": c.val_split}, c.seed)
                if c.val_split > 0
                else {"train": train}
            )
            train, held = split["train"], split.get("val", train)
        shape = self._image_shape(train)
        if console is not None:
            console.print(
                f"data: {source.description}; train {len(train)}, held out {len(held)}; "
                f"images made at {shape[0]}x{shape[1]}x{shape[2]}"
            )
        return _Prepared(train, held, source.class_names, labelled, shape, source.description)

    def _image_shape(self, images: ImageSet) -> tuple[int, int, int]:
        sizes, gray = sampled_sizes(images)
        channels = 1 if gray else 3
        if self.config.image_size is not None:
            return self.config.image_size, self.config.image_size, channels
        if len(sizes) > 1:
            (a, _), (b, _) = sizes.most_common(2)
            raise DataError(
                f"the images have mixed sizes (e.g. {a[0]}x{a[1]} and {b[0]}x{b[1]}); pass --image-size "
                "to make them all one size"
            )
        ((h, w),) = sizes
        size = size_for_data(h, w)
        return size, size, channels

    def _dataset(self, images: ImageSet, batch_size: int) -> tf.data.Dataset:
        return make_dataset(
            images,
            self.image_shape_,
            batch_size,
            training=True,
            num_classes=len(self.class_names_),
            seed=self.config.seed,
        )

    # -- training -------------------------------------------------------------------------

    def _adopt(self, prepared: _Prepared, run) -> None:
        self.class_names_, self.labelled_ = prepared.class_names, prepared.labelled
        self.image_shape_ = prepared.image_shape

    def _plan(self, prepared: _Prepared, rt, run) -> Plan:
        c = self.config
        steps = c.steps_per_epoch or math.ceil(len(prepared.train) / c.batch_size)
        epochs = c.epochs or min(200, max(5, math.ceil(STEP_BUDGETS[c.model] / steps)))
        callbacks = [
            SampleGrids(
                lambda: self.sample(c.grid_size, seed=c.seed),
                run.path / "samples",
                self._grid_columns(),
                c.grid_every or max(1, epochs // GRIDS),
            )
        ]
        if c.train_minutes is not None:
            callbacks.append(TimeBudget(c.train_minutes))
        return Plan(
            train=self._dataset(prepared.train, c.batch_size).repeat(),
            val=None,
            steps=steps,
            epochs=epochs,
            repeating=True,
            callbacks=callbacks,
            keep_best=c.model not in GANS,  # d_loss and g_loss: no single loss to rank by
        )

    def _build(self, prepared: _Prepared, plan: Plan) -> GenerativeModel:
        c = self.config
        self._sampler = None  # a new model: sampling traces anew
        classes = len(self.class_names_) if c.conditional else 0
        latent = c.latent_dim or LATENT_DIMS[c.model]
        width = c.width or WIDTHS[c.model]
        if c.model == "vae":
            return ConvVAE(
                self.image_shape_,
                classes,
                width,
                latent,
                beta=c.beta,
                kl_warmup_steps=int(c.kl_warmup_epochs * plan.steps),
            )
        if c.model in GANS:
            loss = "dcgan" if c.model == "gan" else "wgan-gp"
            return GAN(
                self.image_shape_,
                classes,
                width,
                latent,
                loss=loss,
                gp_weight=c.gp_weight,
                critic_steps=c.critic_steps if loss == "wgan-gp" else 1,
            )
        return DDPM(
            self.image_shape_,
            classes,
            width,
            schedule=c.noise_schedule,
            timesteps=c.timesteps,
            sample_steps=c.sample_steps,
            ema_decay=c.ema_decay,
            label_dropout=c.label_dropout,
            guidance=c.guidance,
            blocks=c.blocks,
            prediction=c.prediction,
        )

    def _compile(self, model: GenerativeModel, plan: Plan, epochs: int, lr_scale: float) -> None:
        """A GAN has two Adam optimizers (generator, discriminator); the learning rate's
        default depends on the model."""
        c = dataclasses.replace(
            self.config,
            learning_rate=self.config.learning_rate or LEARNING_RATES[self.config.model],
        )
        if isinstance(model, GAN):
            beta_1, beta_2 = (0.5, 0.999) if c.model == "gan" else (0.0, 0.9)
            g_steps = max(1, plan.steps // model.critic_steps)
            model.compile(
                keras.optimizers.Adam(
                    learning_rate_schedule(c, g_steps, epochs, scale=lr_scale),
                    beta_1=beta_1,
                    beta_2=beta_2,
                ),
                keras.optimizers.Adam(
                    learning_rate_schedule(c, plan.steps, epochs, scale=c.d_lr_factor * lr_scale),
                    beta_1=beta_1,
                    beta_2=beta_2,
                ),
            )
        else:
            model.compile(
                optimizer=build_optimizer(c, plan.steps, epochs, scale=lr_scale), jit_compile=False
            )

    # -- sampling -------------------------------------------------------------------------

    def _grid_columns(self) -> int:
        classes = len(self.class_names_)
        return classes if self.config.conditional and classes <= 16 else 8

    def _sample_graph(self):
        """The traced sampler shared by predict, the grids and (re-traced) the export."""
        if self._sampler is None:
            self._sampler = tf.function(self._generate_uint8, reduce_retracing=True)
        return self._sampler

    def _generate_uint8(self, batch_size, seed, labels, steps=None):
        """uint8 images; `labels` (at least one) repeat to fill the batch."""
        labels = tf.gather(labels, tf.range(batch_size) % tf.size(labels))
        kwargs = {"steps": steps} if isinstance(self.model_, DDPM) else {}
        return to_uint8(
            self.model_.generate(
                batch_size, seed, labels if self.config.conditional else None, **kwargs
            )
        )

    def _label_ids(self, label) -> np.ndarray:
        if label is None:
            classes = len(self.class_names_) if self.config.conditional else 1
            return np.arange(classes, dtype=np.int32)
        if not self.config.conditional:
            raise ConfigError(
                "--label needs a conditional model; this run was trained without --conditional"
            )
        if str(label) not in self.class_names_:
            raise DataError(
                f"unknown label '{label}'; this model knows: {', '.join(self.class_names_[:30])}"
            )
        return np.array([self.class_names_.index(str(label))], np.int32)

    def sample(
        self, num: int = 64, *, seed: int = 0, label=None, steps: int | None = None
    ) -> np.ndarray:
        """`num` new images as uint8 (num, H, W, C), fixed by `seed`; `label` picks the class
        of a conditional model (default: every class in turn); `steps`: DDIM steps (ddpm)."""
        self._require_model()
        if not 1 <= int(num) <= MAX_NUM:
            raise ConfigError(f"--num must be between 1 and {MAX_NUM}, got {num}")
        args = [
            tf.constant(int(num), tf.int32),
            tf.constant(int(seed), tf.int64),
            tf.constant(self._label_ids(label)),
        ]
        if steps is not None:
            if not isinstance(self.model_, DDPM):
                raise ConfigError(f"steps apply to ddpm models only, not {self.config.model}")
            if not 1 <= int(steps) <= self.config.timesteps:
                raise ConfigError(
                    f"steps must be between 1 and {self.config.timesteps}, got {steps}"
                )
            args.append(tf.constant(int(steps), tf.int32))
        return self._sample_graph()(*args).numpy()

    def predict(
        self, inputs=None, *, num: int = 64, seed: int = 0, label=None, out=None
    ) -> list[dict]:
        """Sample `num` images and write them as one PNG grid to `out` (default: the run's
        samples/ folder). Returns one row describing what was written."""
        if inputs:
            raise ConfigError(
                "a generate run takes no inputs; use --num, --seed, --label and --out"
            )
        if out is None:
            if self.run_ is None:
                raise ConfigError("predict needs out=FILE.png when the recipe has no run directory")
            out = (
                self.run_.path
                / "samples"
                / f"predict_seed{seed}{'' if label is None else f'_label{label}'}.png"
            )
        if Path(out).suffix.lower() != ".png":
            raise ConfigError(f"--out {out}: give a .png file name")
        with self._phase(f"sampling {num} images"):
            images = self.sample(num, seed=seed, label=label)
        write_png(Path(out), tile_images(images, self._grid_columns() if label is None else 8))
        h, w, ch = images.shape[1:]
        return [
            {
                "file": str(out),
                "images": len(images),
                "seed": seed,
                "label": "" if label is None else str(label),
                "size": f"{h}x{w}x{ch}",
            }
        ]

    # -- evaluation -------------------------------------------------------------------------

    def _evaluate_prepared(self, prepared: _Prepared) -> dict:
        if prepared.labelled:
            epochs = self.config.eval_classifier_epochs
            with self._phase(f"training the evaluator (a small CNN, {epochs} epochs)"):
                self.evaluator_ = self._train_evaluator()
        return self._quality(prepared.held_out)

    def _train_evaluator(self) -> ImageClassifier:
        c = self.config
        classifier = ImageClassifier(
            backbone="small-cnn",
            image_size=self.image_shape_[0],
            epochs=c.eval_classifier_epochs,
            seed=c.seed,
            test_split=0.0,
            label_smoothing=0.0,  # smoothing would cap the confidence
            strategy=one_process_strategy(c.strategy, c.tpu),
            strict=c.strict,
            path_col=c.path_col,
            label_col=c.label_col,
            tfds_data_dir=c.tfds_data_dir,
        )
        return classifier.fit(
            self.data_, self.run_.path / "evaluator", overwrite=True, progress=False
        )

    def _evaluator(self) -> ImageClassifier | None:
        if self.evaluator_ is None and self.run_ is not None:
            folder = self.run_.path / "evaluator"
            if (folder / "model.keras").is_file():
                self.evaluator_ = ImageClassifier.load(folder, progress=False)
        return self.evaluator_

    def _quality(self, real: ImageSet) -> dict:
        c = self.config
        if len(real) > MAX_REAL:
            real = real.subset(
                np.random.default_rng(c.seed).choice(len(real), MAX_REAL, replace=False)
            )
        pixels = np.concatenate(
            [
                x
                for x, _ in make_dataset(
                    real,
                    self.image_shape_,
                    256,
                    training=False,
                    num_classes=max(1, len(self.class_names_)),
                )
            ]
        )
        with self._phase(f"sampling {c.eval_samples} images to score"):
            fake = self.sample(c.eval_samples, seed=c.seed + 1)
        evaluator = self._evaluator()
        with self._phase(f"scoring them against {len(pixels)} real images"):
            metrics = quality.quality_metrics(
                pixels,
                fake,
                evaluator.model_ if evaluator else None,
                quality.inception_weights_file(c.inception_weights),
                c.confidence,
            )
        if evaluator is None:
            metrics["classifier_note"] = (
                "classifier metrics need labelled training data (two classes or more)"
            )
        return metrics

    def evaluate(self, data) -> dict:
        """Quality of new samples against the real images in `data`: the Fréchet distance and
        KID in the features of the run's own classifier, confident-class rate and class
        coverage; FID/KID when an Inception weights file is configured."""
        self._require_model()
        c = self.config
        source = load_image_source(
            data,
            strict=c.strict,
            path_col=c.path_col,
            label_col=c.label_col,
            tfds_data_dir=c.tfds_data_dir,
            unlabelled=True,
        )
        metrics = self._quality(source.splits.get("test") or source.splits["train"])
        if "fid_note" in metrics:
            Console(stderr=True).print(f"[yellow]{metrics['fid_note']}[/]", highlight=False)
        return metrics

    # -- persistence and export -------------------------------------------------------------

    def save(self, directory) -> Path:
        path = super().save(directory)
        evaluator = self._evaluator()
        if evaluator is not None and evaluator.run_.path != path / "evaluator":
            evaluator.save(path / "evaluator")
        return path

    def _signatures(self) -> dict[str, Signature]:
        def draw(batch_size, seed, labels):
            images = self._generate_uint8(batch_size, seed, labels)
            png = tf.map_fn(tf.io.encode_png, images, fn_output_signature=tf.string)
            return {"images": images, "png": png}

        size = tf.TensorSpec([], tf.int32, name="batch_size")
        seed = tf.TensorSpec([], tf.int64, name="seed")
        if self.config.conditional:
            labels = tf.TensorSpec([None], tf.int32, name="labels")
            return {"serving_default": Signature([size, seed, labels], call=draw)}
        return {
            "serving_default": Signature(
                [size, seed],
                call=lambda batch_size, seed: draw(batch_size, seed, tf.zeros([1], tf.int32)),
            )
        }

    # -- report ---------------------------------------------------------------------------

    def _report(self, report: Report, prepared: _Prepared) -> None:
        c, m = self.config, self.metrics_
        h, w, ch = self.image_shape_
        report.text(
            "Data",
            f"{prepared.description}; {len(prepared.train)} training and "
            f"{len(prepared.held_out)} held-out images, generated at {h}x{w}x{ch}",
        )
        report.table(
            "Quality (generated vs held-out images)",
            {k: v for k, v in m.items() if isinstance(v, int | float | str)},
        )
        grids = grids_over_time(self.run_.path / "samples")
        if grids is not None:
            report.figure("Fixed-seed samples over training", grids, "samples_over_time")
        with self._phase("sampling the report's grids"):
            final = tile_images(self.sample(c.grid_size, seed=c.seed), self._grid_columns())
            report.figure(
                "Samples after training", single_image(final, f"seed {c.seed}"), "samples"
            )
            if isinstance(self.model_, DDPM):
                report.figure(
                    "Denoising trajectory (predicted clean image at each DDIM step)",
                    self._trajectory_figure(),
                    "denoising",
                )
            if isinstance(self.model_, ConvVAE):
                report.figure("Latent interpolation", self._interpolation_figure(), "interpolation")

    def _trajectory_figure(self, count: int = 4, columns: int = 8):
        c = self.config
        labels = self._label_ids(None)
        labels = tf.constant(labels[np.arange(count) % len(labels)]) if c.conditional else None
        _, steps = self.model_.sample_trajectory(count, c.seed, labels)
        picks = np.unique(
            np.linspace(0, c.sample_steps - 1, min(columns, c.sample_steps)).astype(int)
        )
        rows = to_uint8(tf.transpose(tf.gather(steps, picks), [1, 0, 2, 3, 4])).numpy()
        return image_rows(
            rows, [f"sample {i + 1}" for i in range(count)], [f"step {i + 1}" for i in picks]
        )

    def _interpolation_figure(self, count: int = 4):
        c = self.config
        rows = []
        for i in range(count):
            labels = (
                tf.fill([INTERPOLATION_STEPS], i % len(self.class_names_))
                if c.conditional
                else None
            )
            rows.append(
                to_uint8(
                    self.model_.interpolate(2 * i, 2 * i + 1, INTERPOLATION_STEPS, labels)
                ).numpy()
            )
        return image_rows(
            np.stack(rows),
            [f"seeds {2 * i}-{2 * i + 1}" for i in range(count)],
            [f"{t:.1f}" for t in np.linspace(0, 1, INTERPOLATION_STEPS)],
        )
