"""`dltoolkit devices` and `dltoolkit datasets`."""

from __future__ import annotations

from dltoolkit.cli import common as c


def devices(strategy: c.Strategy = "auto", tpu: c.Tpu = None, as_json: c.Json = False) -> None:
    """Hardware TensorFlow sees and the strategy a run would use, with the reason.

    `auto` picks a TPU when one is configured, all GPUs of the host (MirroredStrategy) when
    there are several, the cluster when TF_CONFIG describes one (MultiWorkerMirroredStrategy),
    else the one GPU or the CPU.
    """
    c.tensorflow_ready()
    from dltoolkit.core.runtime import describe_devices

    info = describe_devices(strategy or "auto", tpu)
    if as_json:
        c.print_json(info)
        return
    c.print_table("Devices", [{"type": d["type"], "name": d["name"]} for d in info["devices"]])
    c.print_table(
        "Strategy",
        {
            "--strategy " + (strategy or "auto"): info["strategy"],
            "why": info["reason"],
            "TF_CONFIG set": info["tf_config"],
            "--mixed-precision policy": info["mixed_precision_policy"],
        },
    )
    if "cluster" in info:
        c.print_table("Cluster (TF_CONFIG)", info["cluster"])


def datasets(as_json: c.Json = False) -> None:
    """The built-in sample data sets (offline, shipped inside dependencies)."""
    from dltoolkit.data.samples import list_samples

    rows = [{"name": name, "description": text} for name, text in list_samples()]
    if as_json:
        c.print_json(rows)
        return
    c.print_table("Built-in data sets (use with --data NAME)", rows)
