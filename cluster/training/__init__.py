"""Distributed training: Ray Train's data-parallel trainer running MultiWorkerMirroredStrategy across workers."""
