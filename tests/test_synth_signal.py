"""The stand-ins' class signal: with --class-colour every class's images carry its own hue, so a
class is visible even in a small crop (what lets the smoke tables learn in a few dozen steps)."""
from __future__ import annotations

import numpy as np

from repro.data import cifar10, synth


def _nearest_hue_accuracy(images: np.ndarray, labels: np.ndarray) -> float:
    """Top-1 of 'the class whose hue is nearest the image's mean colour' (chroma only)."""
    hues = np.stack([synth.class_colour_of(k, 10) for k in range(10)])
    hues = hues - hues.mean(axis=1, keepdims=True)
    means = images.reshape(len(images), -1, 3).mean(axis=1)
    means = means - means.mean(axis=1, keepdims=True)
    cos = (means @ hues.T) / (np.linalg.norm(means, axis=1, keepdims=True) * np.linalg.norm(hues, axis=1))
    return float((cos.argmax(axis=1) == labels).mean())


def test_class_colour_makes_the_class_visible_in_the_mean_colour(tmp_path):
    plain = synth.make_cifar10(tmp_path / "plain", train=200, val=200, seed=3)
    tinted = synth.make_cifar10(tmp_path / "tinted", train=200, val=200, seed=3, class_colour=0.5)
    x0, y0 = cifar10.read_split(plain, "test")
    x1, y1 = cifar10.read_split(tinted, "test")
    assert np.array_equal(y0, y1)  # same labels, same random draws
    assert _nearest_hue_accuracy(x1, y1) > 0.8
    assert _nearest_hue_accuracy(x0, y0) < 0.5  # the random fields alone say little about the hue

