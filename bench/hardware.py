"""Hardware efficiency: the CPU's model FLOPs utilisation (MFU) when training the MLP and the CNN.

MFU = achieved training FLOP/s / peak matmul FLOP/s, both measured in this run:

* peak: float32 `tf.linalg.matmul` of two n x n matrices (2 n^3 FLOP per call)
  in a fresh process with TF's intra-op threads = the machine's cores; the
  fastest timed call (and the median) of repeated calls.
* achieved: 2 x MACs/sample (`cluster/evaluation/compute.py` counts
  multiply-accumulates; 1 MAC = 2 FLOP) x 3 (forward + backward ~ 3x forward)
  x samples/s of training.
* samples/s two ways: (a) in-process Keras `fit` on in-memory tensors in the
  same probe process and threads as the peak (what the CPU can do on this
  model, no input, no distribution); (b) the project's Ray Train path with the
  Ray Data pipeline, per `ray_scalings` ([workers, CPUs per worker]; 1 x 2 has
  the in-process run's threads on one process, 2 x 1 splits them over two
  workers that all-reduce every step), the median of the epochs after the first.
"""

from __future__ import annotations

import time

from bench import common

NAME = "hardware"
# Ray Train runs on half of full Fashion-MNIST (105 steps an epoch), as the input-pipeline benchmark: on
# the 4,860-row sample an epoch is 19 steps and the stream's per-epoch start weighs on the figure.
DEFAULT = {"matmul_n": 2048, "matmul_seconds": 3.0, "fit_rows": 16384, "fit_epochs": 3, "batch": 256,
           "ray_full_data": True, "ray_fraction": 0.5, "ray_epochs": 3, "repetitions": 2, "ray_train": True,
           "ray_repetitions": 1, "ray_scalings": [[1, 2], [2, 1]],
           "models": {"mlp": {"family": "mlp", "width": 1.0, "depth": 2},
                      "cnn": {"family": "cnn", "width": 1.0, "depth": 2}}}
# Quick: no Ray Train runs (their start-up dominates a smoke run); MFU in process only.
QUICK = {**DEFAULT, "matmul_n": 1024, "matmul_seconds": 1.0, "fit_rows": 4096, "fit_epochs": 2,
         "ray_full_data": False, "ray_fraction": 0.5, "ray_epochs": 2, "repetitions": 1, "ray_train": False,
         "ray_scalings": []}


def peak_matmul(n: int, seconds: float) -> dict:
    import tensorflow as tf

    a = tf.random.uniform((n, n), dtype=tf.float32)
    b = tf.random.uniform((n, n), dtype=tf.float32)
    matmul = tf.function(lambda x, y: tf.linalg.matmul(x, y))
    for _ in range(3):
        matmul(a, b).numpy()
    timings, started = [], time.perf_counter()
    while len(timings) < 5 or time.perf_counter() - started < seconds:
        start = time.perf_counter()
        matmul(a, b).numpy()  # .numpy() waits for the result
        timings.append(time.perf_counter() - start)
    flop = 2.0 * n ** 3
    return {"n": n, "calls": len(timings), "peak_flops": flop / min(timings),
            "median_flops": flop / common.median(timings)}


def probe(payload: dict) -> dict:
    """Peak matmul FLOP/s, then Keras fit samples/s of each model, in this fresh process."""
    import cluster  # noqa: F401
    import tensorflow as tf

    from bench.input_pipeline import in_memory_tensors
    from cluster.evaluation.compute import compute_profile
    from cluster.models import ModelShape, build_model
    from cluster.spec import TrainSpec
    from cluster.tf_datasets import epoch_options
    from cluster.training.loop import compile_classifier
    from cluster.training.optim import build_optimizer

    threads = payload["threads"]
    tf.config.threading.set_intra_op_parallelism_threads(threads)
    tf.config.threading.set_inter_op_parallelism_threads(threads)
    peak = peak_matmul(payload["matmul_n"], payload["matmul_seconds"])
    batch, rows, epochs = payload["batch"], payload["fit_rows"], payload["fit_epochs"]
    images, labels = in_memory_tensors(rows, (28, 28, 1), 10, 0)
    models = {}
    for name, shape in payload["models"].items():
        model = build_model(shape["family"], ModelShape((28, 28, 1), 10), shape["width"], shape["depth"])
        steps = rows // batch
        train = TrainSpec(epochs=epochs, global_batch_size=batch)
        # Keras's settings as the Ray path's train spec has them (the same steps per call).
        compile_classifier(model, build_optimizer(train, steps), 10, steps_per_execution=train.steps_per_execution)
        # The options Ray Train's loop uses, so neither side pays tf.data's autotuning join per `fit`.
        data = (tf.data.Dataset.from_tensor_slices((images, labels)).batch(batch, drop_remainder=True).repeat()
                .with_options(epoch_options()))
        per_epoch = []
        for epoch in range(epochs):
            start = time.perf_counter()
            model.fit(data, epochs=epoch + 1, initial_epoch=epoch, steps_per_epoch=steps, verbose=0)
            per_epoch.append(steps * batch / (time.perf_counter() - start))
        profile = compute_profile(model)
        models[name] = {"macs_per_sample": profile.flops, "params": profile.params,
                        "samples_per_second": common.steady(per_epoch), "per_epoch_sps": per_epoch}
    return {"threads": threads, "peak": peak, "models": models}


def training_flops(macs_per_sample: int, samples_per_second: float) -> float:
    """FLOP/s of training: 2 FLOP per MAC, x3 for the forward and backward passes."""
    return 2.0 * macs_per_sample * 3.0 * samples_per_second


def run(settings: dict, ctx: common.Context) -> dict:
    import os
    import sys

    from bench.input_pipeline import ray_train_sps, scaling_key
    from cluster.data.pipeline import prepare
    from cluster.spec import validate_document

    common.connect(sys.modules[__name__])
    payload = {key: settings[key] for key in ("matmul_n", "matmul_seconds", "fit_rows", "fit_epochs", "batch",
                                              "models")}
    scalings = [tuple(scaling) for scaling in settings["ray_scalings"]]
    probes, ray_runs = [], {name: {scaling_key(*s): [] for s in scalings} for name in settings["models"]}
    storage = ctx.fresh("hardware")
    data = common.data_section(settings["ray_full_data"], settings["ray_fraction"])
    prepared = None
    for rep in range(settings["repetitions"]):
        common.log(f"hardware: peak matmul and in-process fit, repetition {rep + 1}")
        probes.append(common.run_probe(__name__, {**payload, "threads": os.cpu_count()}))
        if not settings["ray_train"] or rep >= settings["ray_repetitions"]:
            continue
        for name, shape in settings["models"].items():
            for workers, cpus in scalings:
                key = scaling_key(workers, cpus)
                common.log(f"hardware: Ray Train {name} {key}, repetition {rep + 1}")
                job = validate_document(common.train_document(
                    f"bench-hw-{name}", data, shape, {"epochs": settings["ray_epochs"],
                                                      "global_batch_size": settings["batch"]}, storage,
                    scaling={"num_workers": workers, "cpus_per_worker": cpus}))
                prepared = prepared or prepare(job.data, job.train.seed)
                # Every epoch on real input: the project's loop unchanged; the figure is the epochs after the first.
                plan = ["real"] * settings["ray_epochs"]
                ray_runs[name][key].append(
                    ray_train_sps(job, prepared, plan, str(storage), f"{name}-{key}-{rep}", "shard_batches")["real"])
    peak = common.median(p["peak"]["peak_flops"] for p in probes)
    models = {}
    for name in settings["models"]:
        macs = probes[0]["models"][name]["macs_per_sample"]
        local_sps = common.median(p["models"][name]["samples_per_second"] for p in probes)
        in_process_mfu = training_flops(macs, local_sps) / peak
        ray_train = {}
        for workers, cpus in scalings:
            key = scaling_key(workers, cpus)
            sps = common.median(r["samples_per_second"] for r in ray_runs[name][key])
            mfu = training_flops(macs, sps) / peak if sps else None
            ray_train[key] = {"workers": workers, "cpus_per_worker": cpus, "samples_per_second": sps,
                              "flops": sps and training_flops(macs, sps), "mfu": mfu,
                              "mfu_vs_in_process": mfu and mfu / in_process_mfu,
                              "step_ms": sps and 1e3 * settings["batch"] / sps}
        models[name] = {
            "macs_per_sample": macs, "params": probes[0]["models"][name]["params"],
            "in_process_sps": local_sps, "in_process_flops": training_flops(macs, local_sps),
            "in_process_mfu": in_process_mfu, "ray_train": ray_train,
            "step_ms_in_process": 1e3 * settings["batch"] / local_sps,
            "matmul_seconds_per_step_at_peak": training_flops(macs, 1.0) * settings["batch"] / peak,
        }
    return {"settings": settings, "threads": os.cpu_count(), "peak_flops": peak,
            "peak_flops_median_call": common.median(p["peak"]["median_flops"] for p in probes),
            "probes": probes, "ray_runs": ray_runs, "models": models}


if __name__ == "__main__":
    common.probe_main(probe)
