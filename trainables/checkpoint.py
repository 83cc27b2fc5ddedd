"""Placeholder until the loop refactor lands: the checkpoint directory's file names and provenance fields."""

from trainables.loop import TRIAL_FILE

__all__ = ["TRIAL_FILE", "PROVENANCE_FIELDS"]

PROVENANCE_FIELDS = ("torch_version", "ray_version", "optuna_version", "numpy_version", "git_sha", "git_dirty",
                     "hostname", "device", "threads", "started_at", "ended_at", "gpu_ids")
