"""Training SBNNs in PyTorch with the method of the SBNN paper (Sections 3.2 to 3.4).

- :mod:`.quant`: sign (sign(0) = +1) and its estimators (clipped STE, IR-Net, ApproxSign), the
  weight domains (symmetric, closed-form Eq. 15, learned), the Eq. 16 penalty and Eq. 18 lambda;
- :mod:`.controller`: the sparsity controller (budget groups, the ramp of their targets and its
  feedback, or the paper's fixed gamma) and the per-layer budgets;
- :mod:`.nets`: models whose layers map one to one onto the ``.sbnn`` format;
- :mod:`.fold`: the exact folding of a trained net into a model, with its per-neuron proof;
- :mod:`.loop`: the training loop, checkpoints, logs and the export (:func:`.loop.export_model`);
- :mod:`.planes`: bit-plane pruning (``python -m sbnn_hdl.bitprune``).

``python -m sbnn_hdl.train --data fashion-mnist --arch mlp:256,256 --domain learned --sparsity 0.95
-o model.sbnn``; see ``docs/training.md``. This subpackage, and the commands ``export`` and
``bitprune`` built on it, are the only parts of sbnn_hdl that import torch.
"""
