"""Training SBNNs in PyTorch with the method of the SBNN paper (Sections 3.2 to 3.4).

- :mod:`.quant`: sign (sign(0) = +1) and its estimators (clipped STE, IR-Net, ApproxSign), the
  weight domains (symmetric, closed-form Eq. 15, learned), the Eq. 16 penalty and Eq. 18 lambda;
- :mod:`.nets`: models whose layers map one to one onto the ``.sbnn`` format;
- :mod:`.loop`: the training loop, checkpoints, logs and the export (:mod:`sbnn_hdl.export`).

``python -m sbnn_hdl.train --data fashion-mnist --arch mlp:256,256 --domain learned --sparsity 0.95
-o model.sbnn``; see ``docs/training.md``. This subpackage (and :mod:`sbnn_hdl.export`) are the only
parts of sbnn_hdl that import torch.
"""
