"""Linear probe: how well a label the model never saw can be read off its latent means.

A logistic regression (L2, ``C = 1``, lbfgs) of an integral label column (jets' ``y``: quark or
gluon) on the standardised posterior means of held-out rows, fitted on a stratified train part of
those rows and scored on the rest: ROC AUC (``probe_auc``; for more than 2 classes the macro
average of one-vs-rest AUCs) and accuracy (``probe_accuracy``). Both higher is better; 0.5 AUC is
chance. A representation-quality check in the spirit of the downstream classifiers of
Locatello et al. 2019 (arXiv:1811.12359), on a data label rather than ground-truth factors.
"""

from __future__ import annotations

import numpy as np
from sklearn.linear_model import LogisticRegression
from sklearn.metrics import accuracy_score, roc_auc_score
from sklearn.model_selection import train_test_split
from sklearn.preprocessing import StandardScaler

from analysis.metrics.utils import RepresentationFn

__all__ = ["TEST_FRACTION", "compute_probe", "probe_from_codes"]

TEST_FRACTION = 0.25  # of the held-out rows scored; the rest fit the probe
MAX_ITER = 1_000  # lbfgs iterations: standardised codes converge in far fewer


def compute_probe(images: np.ndarray, labels: np.ndarray, representation_fn: RepresentationFn, *,
                  random_state: np.random.Generator, test_fraction: float = TEST_FRACTION,
                  batch_size: int = 256) -> dict[str, float]:
    """Encodes held-out rows and scores a linear probe of their labels.

    Args:
        images: float32 ``(N, ...)`` held-out model inputs.
        labels: ``(N,)`` integral class labels ``0 .. k - 1`` of the same rows (ints, or floats
            holding whole numbers such as jets' ``y``).
        representation_fn: Inputs ``(B, ...)`` float32 -> posterior means ``(B, latent_dim)``.
        random_state: Draws the split and seeds the solver.
        test_fraction: Share of the rows scored, in (0, 1).
        batch_size: Rows per call of ``representation_fn``.

    Returns:
        ``{"probe_auc": auc, "probe_accuracy": accuracy}``, both in [0, 1].

    Raises:
        ValueError: See :func:`probe_from_codes`; also if ``images`` and ``labels`` differ in length.
    """
    if len(images) != len(labels):
        raise ValueError(f"images and labels must have as many rows, but got {len(images)} and {len(labels)}")
    codes = np.concatenate([np.asarray(representation_fn(images[start:start + batch_size]))
                            for start in range(0, len(images), batch_size)])
    return probe_from_codes(codes, labels, random_state=random_state, test_fraction=test_fraction)


def probe_from_codes(codes: np.ndarray, labels: np.ndarray, *, random_state: np.random.Generator,
                     test_fraction: float = TEST_FRACTION) -> dict[str, float]:
    """ROC AUC and accuracy of a logistic regression of ``labels`` on ``codes``, on held-out rows.

    Args:
        codes: float ``(num_samples, latent_dim)``, row i the code of sample i.
        labels: ``(num_samples,)`` integral class labels of the same samples.
        random_state: Draws the stratified split and seeds the solver.
        test_fraction: Share of the rows scored, in (0, 1); the rest fit the probe.

    Returns:
        ``{"probe_auc": auc, "probe_accuracy": accuracy}``: ROC AUC of the predicted probability of
        class 1 for 2 classes, the macro one-vs-rest AUC for more; accuracy of the most probable class.

    Raises:
        ValueError: If the arrays are not ``(N, D)`` and ``(N,)``, a label is not a whole number,
            fewer than 2 classes occur, a class has too few rows for both parts, or ``test_fraction``
            is not in (0, 1).
    """
    codes = np.asarray(codes, dtype=np.float64)
    labels = np.asarray(labels)
    if codes.ndim != 2 or labels.shape != (codes.shape[0],):
        raise ValueError(f"codes must be (num_samples, latent_dim) and labels (num_samples,), but got shapes "
                         f"{codes.shape} and {labels.shape}")
    if not 0 < test_fraction < 1:
        raise ValueError(f"`0 < test_fraction < 1` must hold, but got test_fraction={test_fraction}")
    if not np.array_equal(labels, np.round(labels)):
        raise ValueError("the probe's labels must be whole numbers (class indices)")
    labels = labels.astype(np.int64)
    classes, counts = np.unique(labels, return_counts=True)
    if len(classes) < 2:
        raise ValueError(f"the probe needs >= 2 classes among the held-out rows, but got {classes.tolist()}")
    test_rows = int(np.ceil(test_fraction * len(labels)))
    if counts.min() < 2 or test_rows < len(classes) or len(labels) - test_rows < len(classes):
        raise ValueError(f"the probe needs each class in both parts: {len(labels)} rows, class counts "
                         f"{dict(zip(classes.tolist(), counts.tolist()))}, test_fraction={test_fraction}")
    seed = int(random_state.integers(2**31))
    x_train, x_test, y_train, y_test = train_test_split(codes, labels, test_size=test_rows, stratify=labels,
                                                        random_state=seed)
    scaler = StandardScaler().fit(x_train)
    model = LogisticRegression(max_iter=MAX_ITER, random_state=seed).fit(scaler.transform(x_train), y_train)
    proba = model.predict_proba(scaler.transform(x_test))  # (N_test, num_classes), columns in model.classes_
    if len(classes) == 2:
        auc = roc_auc_score(y_test, proba[:, 1])
    else:
        auc = roc_auc_score(y_test, proba, multi_class="ovr", average="macro", labels=model.classes_)
    accuracy = accuracy_score(y_test, model.classes_[np.argmax(proba, axis=1)])
    return {"probe_auc": float(auc), "probe_accuracy": float(accuracy)}
