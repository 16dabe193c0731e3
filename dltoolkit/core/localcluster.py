"""A multi-worker cluster of processes on this machine (127.0.0.1): free ports and TF_CONFIG.

For trying `--strategy multi-worker` on one host, and for the tests and benchmarks that do.
"""

from __future__ import annotations

import json
import socket


def free_ports(n: int) -> list[int]:
    """`n` TCP ports on 127.0.0.1 that are free right now."""
    sockets = [socket.socket() for _ in range(n)]
    for s in sockets:
        s.bind(("127.0.0.1", 0))
    ports = [s.getsockname()[1] for s in sockets]
    for s in sockets:
        s.close()
    return ports


def local_tf_config(ports: list[int], index: int) -> str:
    """TF_CONFIG of worker `index` in a cluster of one worker per port on 127.0.0.1."""
    return json.dumps(
        {
            "cluster": {"worker": [f"127.0.0.1:{p}" for p in ports]},
            "task": {"type": "worker", "index": index},
        }
    )
