"""Re-tuning an edited net (input planes removed, hidden neurons removed): every normalisation
statistic re-computed exactly (:func:`calibrate`), a fine-tune with the run's recipe
(:func:`finetune`), and the hardware figures of a net as the export folds it
(:func:`hardware_figures`). Used by :mod:`.planes` and :mod:`.shrink` (docs/bitprune.md).
"""

import math
from dataclasses import replace

import torch

from ..errors import SbnnError
from ..gateware.verilog import estimate_model
from ..hwplan import HardwareError
from .fold import fold, to_model
from .loop import train
from .nets import encode_batch

__all__ = ["BitpruneError", "FINETUNE_LR_SHARE", "calibrate", "population_moments", "finetune", "hardware_figures",
           "model_figures"]

#: The fine-tune's learning rate, as a share of the checkpoint's (the run starts from a trained
#: net: a full rate would undo much of what it learned before the sparsity penalty settles).
FINETUNE_LR_SHARE = 0.1


class BitpruneError(SbnnError):
    """Bad pruning or shrinking settings."""


class _Moments:
    """Mean and sum of squared deviations per channel, merged batch by batch in float64 (Chan et
    al.'s pairwise update: no cancellation, unlike a running sum of squares)."""

    def __init__(self):
        self.count, self.mean, self.m2 = 0, None, None

    def add(self, z, dims):
        z = z.double()
        n = math.prod(z.shape[d] for d in dims)
        mean = z.mean(dim=dims)
        m2 = ((z - mean.reshape([1 if d in dims else -1 for d in range(z.dim())])) ** 2).sum(dim=dims)
        if self.count == 0:
            self.count, self.mean, self.m2 = n, mean, m2
            return
        total = self.count + n
        delta = mean - self.mean
        self.mean = self.mean + delta * (n / total)
        self.m2 = self.m2 + m2 + delta ** 2 * (self.count * n / total)
        self.count = total


def _normalised_dims(layer, z):
    """The dimensions that a layer's normalisation averages over: all but the channel for batch
    norm, all for the output layer's single shared statistic."""
    return list(range(z.dim())) if layer.last else [d for d in range(z.dim()) if d != 1]


def population_moments(net, layer, x, *, batch=2048):
    """``(mean, variance)`` (float64 tensors) of ``layer``'s output before its normalisation over
    all samples ``x`` (uint8 ``[N, *input.shape]``), with the layers before it in evaluation mode.
    The variance is the unbiased one (divisor ``N - 1``), the convention of PyTorch's
    ``running_var`` and of the output layer's ``out_var``."""
    moments = _Moments()
    with torch.no_grad():
        for start in range(0, len(x), batch):
            z = net(encode_batch(net.spec, x[start:start + batch], net.conv_first), until=layer)
            moments.add(z, _normalised_dims(layer, z))
    if moments.count < 2:
        raise BitpruneError(f"calibration: expected at least 2 values per statistic, found {moments.count}")
    return moments.mean, moments.m2 / (moments.count - 1)


def calibrate(net, x, *, batch=2048):
    """Replace every normalisation statistic of ``net`` by the exact population statistics of its
    input over samples ``x``, first layer first (each layer sees the re-calibrated layers before
    it), not by momentum updates. Returns ``{layer name: (mean, var)}`` as float64 arrays."""
    net.eval()
    stats = {}
    for layer in net.binary_layers:
        mean, var = population_moments(net, layer, x, batch=batch)
        with torch.no_grad():
            if layer.last:
                layer.out_mean.copy_(mean.float())
                layer.out_var.copy_(var.float())
            else:
                layer.bn.running_mean.copy_(mean.float())
                layer.bn.running_var.copy_(var.float())
        stats[layer.name] = (mean.numpy(), var.numpy())
    return stats


def finetune(net, config, data, epochs, *, threads, seed, calibration, lr_share=FINETUNE_LR_SHARE, progress=True):
    """Train ``net`` (built by ``config``) ``epochs`` more epochs with the run's settings (sparsity
    target and controller, gamma, domain, estimator, batch size) at ``lr_share`` of its learning
    rate (cosine to 0), then re-calibrate on ``calibration``. Returns ``(net, config, log)``."""
    config = replace(config, epochs=epochs, lr=config.lr * lr_share, threads=threads, seed=seed)
    tuned, _, log = train(config, data=data, init=net.state_dict(), progress=progress)
    calibrate(tuned, calibration)
    return tuned, config, log


def model_figures(model):
    """``{"first_layer": connections, "connections": all, "lut4": estimate or None}`` of a folded
    model (the LUT4 estimate of :func:`sbnn_hdl.gateware.verilog.estimate_model`; None for a model
    that the generator cannot build)."""
    try:
        lut4 = estimate_model(model)["lut4"]
    except HardwareError:
        lut4 = None
    return {"first_layer": int(model.layers[0].mask.sum()), "connections": model.connections, "lut4": lut4}


def hardware_figures(net, name="candidate"):
    """:func:`model_figures` of ``net``'s folded form as the export folds it (the narrowest
    proven coefficients)."""
    return model_figures(to_model(net, fold(net, search=True), name))
