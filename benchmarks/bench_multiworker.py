"""Multi-worker training on loopback: steps per second with 1 and 2 processes, recovery time
from a killed worker, and the all-reduce size per step of each recipe's default model.

The job is the image classifier (default small-cnn, global batch 128) on the first
`--train` MNIST images, each configuration a fresh set of processes:

- one process, `--strategy cpu` (the reference);
- one process, `--strategy multi-worker` in a one-worker cluster (the strategy's own cost);
- two processes on 127.0.0.1, `--strategy multi-worker` (each takes half of every global batch).

Steps per second come from history.csv (median epoch time after the first, which traces).
Recovery: two workers train; once two epochs are logged worker 1 is killed (SIGKILL); the
chief notices, exits, and both are restarted at once with the same command, as a Kubernetes
TFJob would. Kill to first new step = the start of the first epoch trained after the
restart (when its history row was written minus that epoch's own duration) minus the kill.

    python benchmarks/bench_multiworker.py --mnist /work/shared/data/mnist [--train 9000 --epochs 3]
"""

from __future__ import annotations

import argparse
import os
import signal
import subprocess
import sys
import tempfile
import time
from pathlib import Path

from common import load_mnist, machine, median, print_table

from dltoolkit.core.localcluster import free_ports, local_tf_config

WAIT = 900  # seconds any launch may take before its processes are killed


def train_worker(args) -> None:
    """One training process (run by the driver below with TF_CONFIG set as needed)."""
    from dltoolkit import ImageClassifier

    x, y = load_mnist(args.mnist, "train")
    clf = ImageClassifier(
        epochs=args.epochs,
        batch_size=args.batch_size,
        seed=0,
        early_stopping_patience=0,
        test_split=0,
        strategy=args.strategy,
    )
    clf.fit((x[: args.train, ..., None], y[: args.train]), args.out, progress=False)


def launch(args, out: Path, workers: int, strategy: str, epochs: int) -> list[subprocess.Popen]:
    ports = free_ports(workers)
    procs = []
    for index in range(workers):
        env = {**os.environ, "TF_CPP_MIN_LOG_LEVEL": "2", "TF_CONFIG": ""}
        if strategy == "multi-worker":
            env["TF_CONFIG"] = local_tf_config(ports, index)
        command = [
            sys.executable,
            __file__,
            "--worker",
            "--mnist",
            args.mnist,
            "--out",
            str(out),
            "--train",
            str(args.train),
            "--epochs",
            str(epochs),
            "--batch-size",
            str(args.batch_size),
            "--strategy",
            strategy,
        ]
        procs.append(
            subprocess.Popen(
                command,
                env=env,
                stdout=subprocess.DEVNULL,
                stderr=subprocess.PIPE,
                text=True,
                start_new_session=True,
            )
        )
    return procs


def wait(procs: list[subprocess.Popen], seconds: float = WAIT) -> list[int]:
    """Exit codes, waiting at most `seconds` in all; a process still running is killed."""
    deadline, codes = time.monotonic() + seconds, []
    for proc in procs:
        try:
            _, err = proc.communicate(timeout=max(1.0, deadline - time.monotonic()))
        except subprocess.TimeoutExpired:
            os.killpg(proc.pid, signal.SIGKILL)
            _, err = proc.communicate()
        if proc.returncode:
            print(
                f"process {proc.args[-1]} exited {proc.returncode}: {err[-1500:]}", file=sys.stderr
            )
        codes.append(proc.returncode)
    return codes


def history(out: Path) -> list[dict]:
    from dltoolkit.core.callbacks import read_history

    return read_history(out / "history.csv")


def throughput(args, root: Path, label: str, workers: int, strategy: str) -> dict:
    out = root / label.replace(" ", "-")
    started = time.perf_counter()
    procs = launch(args, out, workers, strategy, args.epochs)
    codes = wait(procs)
    wall = time.perf_counter() - started
    if any(codes):
        sys.exit(f"{label}: exit codes {codes}")
    rows = history(out)
    steps = -(-round(args.train * 0.9) // args.batch_size)  # 10% is held out for validation
    epoch = median([r["seconds"] for r in rows[1:]] or [rows[0]["seconds"]])
    return {
        "setup": label,
        "processes": workers,
        "steps/epoch": steps,
        "epoch s (median after 1st)": epoch,
        "steps/s": steps / epoch,
        "images/s": steps * args.batch_size / epoch,
        "job wall s": wall,
        "val accuracy": rows[-1].get("val_accuracy", float("nan")),
    }


def recovery(args, root: Path) -> dict:
    out, epochs = root / "recovery", max(args.epochs + 3, 6)
    procs = launch(args, out, 2, "multi-worker", epochs)
    deadline = time.monotonic() + WAIT
    while len(history(out)) < 2:
        if time.monotonic() > deadline or procs[0].poll() is not None:
            wait(procs, 1)
            sys.exit("recovery: the job ended or stalled before two epochs were logged")
        time.sleep(0.05)
    logged = len(history(out))
    os.killpg(procs[1].pid, signal.SIGKILL)
    killed = time.time()
    chief_code = wait(procs[:1], 300)[0]
    detected = time.time()
    wait(procs[1:], 10)
    restarted = time.time()
    procs = launch(args, out, 2, "multi-worker", epochs)
    history_file = out / "history.csv"
    while history_file.stat().st_mtime <= restarted:
        if time.monotonic() > deadline or procs[0].poll() is not None:
            break
        time.sleep(0.05)
    first = history(out)[-1]
    first_step = history_file.stat().st_mtime - first["seconds"]
    codes = wait(procs)
    rows = history(out)
    return {
        "epochs logged at kill": logged,
        "chief exit code": chief_code,
        "kill to chief exit s": detected - killed,
        "restart to first new step s": first_step - restarted,
        "kill to first new step s": first_step - killed,
        "resumed at epoch": int(first["epoch"]),
        "epochs in history": f"{[int(r['epoch']) for r in rows] == list(range(1, epochs + 1))} "
        f"({len(rows)}/{epochs})",
        "restart exit codes": codes,
    }


def all_reduce_sizes(root: Path) -> list[dict]:
    """Trainable parameters of each recipe's default model on its built-in sample; MultiWorker-
    MirroredStrategy all-reduces one float32 gradient per trainable parameter each step."""
    import dltoolkit
    from dltoolkit.models.vision import build_image_model

    rows = []
    for name in ("ImageClassifier", "Forecaster", "AnomalyDetector", "NodeClassifier"):
        recipe_cls = getattr(dltoolkit, name)
        recipe = recipe_cls(epochs=1, strategy="cpu").fit(
            out=root / f"params-{name}", progress=False
        )
        rows.append(_size_row(f"{name} default on '{recipe_cls.default_data}'", recipe.model_))
    for backbone, shape in (
        ("efficientnetv2-b0", (224, 224, 3)),
        ("resnet50", (224, 224, 3)),
        ("vit-b16", (224, 224, 3)),
    ):
        model = build_image_model(backbone, shape, 1000, weights=None).model
        rows.append(_size_row(f"ImageClassifier {backbone}, 1000 classes (fine-tuning all)", model))
    return rows + built_model_sizes()


def built_model_sizes() -> list[dict]:
    """The generators (as measured in RESULTS.md) and the summarizer's default model, built
    without training (their fits need minutes): generators at the digits sample's size, the
    summarizer at its vocabulary_size cap."""
    import numpy as np

    from dltoolkit.models.diffusion import DDPM
    from dltoolkit.models.generative import GAN, ConvVAE
    from dltoolkit.models.seq2seq import Seq2SeqTransformer
    from dltoolkit.specs.generate import LATENT_DIMS, GeneratorConfig
    from dltoolkit.specs.summarize import SummarizerConfig

    g, s, digits = GeneratorConfig(), SummarizerConfig(), (16, 16, 1)
    # The DDPM, VAE and GAN as measured in RESULTS.md: width 32, the DDPM with 2 blocks per
    # level (the DDPM's defaults until its zero-argument run had to fit in 5 minutes).
    width, blocks = 32, 2
    summarizer = Seq2SeqTransformer(
        s.vocabulary_size,
        s.max_source_length,
        s.max_target_length,
        d_model=s.d_model,
        layers_=s.layers,
        heads=s.heads,
        ff_dim=s.ff_dim,
        dropout=s.dropout,
        positions=s.positions,
        pad_id=0,
    )
    ids = np.ones((1, 4), np.int32)
    summarizer({"source": ids, "target": ids})
    return [
        _size_row(
            "ImageGenerator ddpm (width 32, 2 blocks) on 'digits'",
            DDPM(digits, 0, width, timesteps=g.timesteps, blocks=blocks).network,
        ),
        _size_row("ImageGenerator vae on 'digits'", ConvVAE(digits, 0, width, LATENT_DIMS["vae"])),
        _size_row(
            "ImageGenerator gan (generator + discriminator) on 'digits'",
            GAN(digits, 0, width, LATENT_DIMS["gan"]),
        ),
        _size_row(f"Summarizer transformer (default), {s.vocabulary_size} wordpieces", summarizer),
    ]


def _size_row(name: str, model) -> dict:
    trainable = sum(int(v.numpy().size) for v in model.trainable_variables)
    return {"model": name, "trainable params": trainable, "all-reduce MB/step": trainable * 4 / 1e6}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--mnist", required=True, help="folder with the MNIST IDX gz files")
    parser.add_argument("--train", type=int, default=9000, help="MNIST training images used")
    parser.add_argument("--epochs", type=int, default=3)
    parser.add_argument("--batch-size", type=int, default=128, help="global batch size")
    parser.add_argument(
        "--repeats", type=int, default=1, help="runs of every setup (medians reported)"
    )
    parser.add_argument("--no-recovery", action="store_true", help="skip the kill/restart run")
    parser.add_argument("--no-params", action="store_true", help="skip the all-reduce size table")
    parser.add_argument("--worker", action="store_true", help=argparse.SUPPRESS)
    parser.add_argument("--out", help=argparse.SUPPRESS)
    parser.add_argument("--strategy", default="cpu", help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.worker:
        train_worker(args)
        return
    print(f"machine: {machine()}")
    with tempfile.TemporaryDirectory(prefix="bench-multiworker-") as tmp:
        root = Path(tmp)
        setups = [
            ("1 process, cpu", 1, "cpu"),
            ("1 worker, multi-worker", 1, "multi-worker"),
            ("2 workers, multi-worker", 2, "multi-worker"),
        ]
        runs = [
            throughput(args, root / f"repeat{r}", *setup)
            for r in range(args.repeats)
            for setup in setups
        ]  # interleaved, so load hits all
        print_table(
            f"Throughput: small-cnn, MNIST first {args.train}, global batch {args.batch_size}, "
            f"{args.epochs} epochs (every run)",
            runs,
        )
        if args.repeats > 1:
            print_table(
                "Throughput, median over repeats",
                [
                    {
                        "setup": label,
                        "steps/s": median([r["steps/s"] for r in runs if r["setup"] == label]),
                        "images/s": median([r["images/s"] for r in runs if r["setup"] == label]),
                    }
                    for label, _, _ in setups
                ],
            )
        if not args.no_recovery:
            print_table(
                "Recovery from a killed worker (2 workers)",
                [recovery(args, root / f"repeat{r}") for r in range(args.repeats)],
            )
        if not args.no_params:
            print_table("All-reduce size per step (float32 gradients)", all_reduce_sizes(root))
    print(f"load after: {os.getloadavg()}")


if __name__ == "__main__":
    main()
