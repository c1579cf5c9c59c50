"""Build the shipped example model ``examples/digits.sbnn`` and its test inputs.

The example is small and real: scikit-learn's 8x8 handwritten digits (UCI optdigits, 1,797
images, pixel values 0..16, clipped here to 0..15 so that they fit 4 bits). Its weights are not
trained with the SBNN method (that is ``sbnn_hdl.train``); they are set in closed form, which
needs no PyTorch and takes a second:

- ``fc1``: 256 contrast features. Each neuron connects to a few random pixels ``S`` and fires
  when their mean exceeds the image's mean: ``64*p - |S|*q >= t``, with ``t`` the feature's
  median over the training images. It reads only the top two bit planes (``planes [3, 2]``)
  of the ``integer`` input, so it uses ``a``, a non-zero ``b`` and plane selection.
- ``out``: for each class the ``M`` features whose firing rate differs most between that class
  and the others, positive evidence only: ``score = p`` (``a = 1``, ``b = 0``, ``t = 0``).

Run ``./dev python examples/make_digits.py`` to rebuild; the output is deterministic.
"""

import os

import numpy as np
from sklearn.datasets import load_digits

from sbnn_hdl import Dense, InputSpec, Model, golden, save
from sbnn_hdl._files import save_npy

HIDDEN, CONNECT, PER_CLASS, SEED = 256, 6, 40, 2026
HERE = os.path.dirname(os.path.abspath(__file__))


def main():
    digits = load_digits()
    x = np.minimum(digits.data, 15).astype(np.uint8)
    y = digits.target.astype(np.int64)
    rng = np.random.default_rng(SEED)
    order = rng.permutation(len(x))
    train, test = order[:1437], order[1437:]
    spec = InputSpec(shape=(64,), bits=4, encoding="integer", planes=(3, 2))

    mask1 = np.zeros((HIDDEN, 64), np.uint8)
    for j in range(HIDDEN):
        mask1[j, rng.choice(64, size=rng.integers(2, CONNECT + 1), replace=False)] = 1
    a1 = np.full(HIDDEN, 64, np.int64)
    b1 = -mask1.sum(axis=1).astype(np.int64)
    v = golden.encode_input(spec, x[train], flat=True)
    acc = a1 * (v @ mask1.T.astype(np.int64)) + b1 * v.sum(axis=1, keepdims=True)
    t1 = np.median(acc, axis=0).astype(np.int64) + 1
    fc1 = Dense("fc1", mask1, a1, b1, t1)

    hidden = (acc >= t1).astype(np.float64)
    mask2 = np.zeros((10, HIDDEN), np.uint8)
    for c in range(10):
        gap = hidden[y[train] == c].mean(axis=0) - hidden[y[train] != c].mean(axis=0)
        mask2[c, np.argsort(-gap, kind="stable")[:PER_CLASS]] = 1
    out = Dense("out", mask2, np.ones(10, np.int64), np.zeros(10, np.int64), np.zeros(10, np.int64))

    draft = Model("digits", spec, [fc1, out])
    accuracy = float((golden.infer(draft, x[test]).predictions == y[test]).mean())
    model = Model("digits", spec, [fc1, out], classes=[str(c) for c in range(10)], metadata={
        "dataset": "scikit-learn digits 8x8 (UCI optdigits), pixels clipped to 0..15",
        "method": "closed-form example weights (examples/make_digits.py), not SBNN-trained",
        "test_samples": int(len(test)), "test_accuracy": round(accuracy, 4)})
    save(model, os.path.join(HERE, "digits.sbnn"))
    save_npy(os.path.join(HERE, "digits_x.npy"), x[test])
    save_npy(os.path.join(HERE, "digits_y.npy"), y[test])
    print(f"digits.sbnn: {model.connections} connections, test accuracy {100 * accuracy:.1f}% "
          f"on {len(test)} images")


if __name__ == "__main__":
    main()
