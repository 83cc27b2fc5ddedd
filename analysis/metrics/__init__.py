"""Disentanglement metrics, one module each, as disentanglement_lib defines them.

``METRICS`` maps the names a study spec uses (``evaluation.metrics``) to the sampler
wrappers, each ``fn(dataset, representation_fn, *, random_state, num_train) -> dict``.
"""

from analysis.metrics.mig import compute_mig, mig_from_codes

METRICS = {"mig": compute_mig}

__all__ = ["METRICS", "compute_mig", "mig_from_codes"]
