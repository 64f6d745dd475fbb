"""Distributed training: Ray Train's TensorflowTrainer running MultiWorkerMirroredStrategy across workers."""
