"""Ray Train's TensorFlow set-up, without loading TensorFlow in Ray Train's controller.

Ray's `TensorflowConfig` lives in the `ray.train.tensorflow` package, whose import
loads TensorFlow (3-4 s of CPU). Ray Train's controller unpickles the backend
config, so with Ray's config every run paid that in a process that never trains,
before its workers could start. This config does what Ray's does, from a module
that imports no TensorFlow: each worker gets `TF_CONFIG` naming every worker's
address and its own index, which MultiWorkerMirroredStrategy reads.
"""

from __future__ import annotations

import json
import os
import socket
from dataclasses import dataclass

import ray
from ray.train.backend import Backend, BackendConfig


def worker_address() -> str:
    """This worker's node address and a free port on it, as TF_CONFIG writes addresses."""
    host = ray.util.get_node_ip_address()
    family = socket.AF_INET6 if ":" in host else socket.AF_INET
    with socket.socket(family, socket.SOCK_STREAM) as probe:
        probe.bind(("", 0))
        port = probe.getsockname()[1]
    return f"[{host}]:{port}" if family == socket.AF_INET6 else f"{host}:{port}"


def set_tf_config(addresses: list[str], index: int) -> None:
    os.environ["TF_CONFIG"] = json.dumps({"cluster": {"worker": addresses}, "task": {"type": "worker", "index": index}})


class MultiWorkerBackend(Backend):
    def on_start(self, worker_group, backend_config) -> None:
        addresses = worker_group.execute(worker_address)
        ray.get([worker_group.execute_single_async(index, set_tf_config, addresses, index)
                 for index in range(len(worker_group))])


@dataclass
class MultiWorkerConfig(BackendConfig):
    """The backend of `trainer.Trainer` (`DataParallelTrainer(backend_config=MultiWorkerConfig())`)."""

    @property
    def backend_cls(self):
        return MultiWorkerBackend
