"""The TensorFlow backend config Ray Train's controller unpickles: no TensorFlow import, and the TF_CONFIG
MultiWorkerMirroredStrategy reads."""

import json
import os
import socket
import subprocess
import sys

import pytest


def test_the_backend_module_loads_no_tensorflow():
    """The controller process unpickles the config: importing its module must not load TensorFlow."""
    code = ("import sys, pickle; from cluster.training.backend import MultiWorkerConfig; "
            "pickle.loads(pickle.dumps(MultiWorkerConfig())); "
            "print(sorted(m for m in sys.modules if m.split('.')[0] == 'tensorflow'))")
    done = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    assert done.stdout.strip() == "[]"


def test_tf_config_is_what_tensorflow_reads(monkeypatch):
    import tensorflow as tf

    from cluster.training.backend import set_tf_config

    monkeypatch.delenv("TF_CONFIG", raising=False)
    set_tf_config(["10.0.0.1:1234", "10.0.0.2:5678"], 1)
    resolver = tf.distribute.cluster_resolver.TFConfigClusterResolver()
    assert resolver.cluster_spec().as_dict() == {"worker": ["10.0.0.1:1234", "10.0.0.2:5678"]}
    assert (resolver.task_type, resolver.task_id) == ("worker", 1)
    assert json.loads(os.environ["TF_CONFIG"])["task"] == {"type": "worker", "index": 1}


@pytest.mark.parametrize("host, family", [("127.0.0.1", socket.AF_INET), ("::1", socket.AF_INET6)])
def test_worker_address_is_this_node_and_a_free_port(monkeypatch, host, family):
    import ray

    from cluster.training.backend import worker_address

    if family == socket.AF_INET6 and not socket.has_ipv6:
        pytest.skip("no IPv6 on this machine")
    monkeypatch.setattr(ray.util, "get_node_ip_address", lambda: host)
    address = worker_address()
    bound_host, port = address.rsplit(":", 1)
    assert bound_host == (f"[{host}]" if family == socket.AF_INET6 else host)
    with socket.socket(family, socket.SOCK_STREAM) as server:
        server.bind((host, int(port)))  # free: TensorFlow's server can take it
