"""Test fixtures shared by every part of the project: random valid models and inputs.

:func:`random_model` and :func:`random_inputs` need NumPy only; :mod:`sbnn_hdl.testing.strategies`
wraps them as Hypothesis strategies. The hardware and simulation tests of later stages reuse them,
so the edge cases that matter for hardware (neurons with no or every connection, constant
neurons, negative ``a``, non-zero ``b``, one-neuron layers, 1- and 16-bit inputs, plane subsets)
are all generated here.
"""

from .models import LayerPlan, random_model, random_inputs

__all__ = ["LayerPlan", "random_model", "random_inputs"]
