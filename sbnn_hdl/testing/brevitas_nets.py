"""Brevitas binary networks of the ``brevitas_examples.bnn_pynq`` kind, for the converter's tests
and ``benchmarks/brevitas_tfc.py``: built, given random batch-norm statistics, exported as QONNX.

:func:`fc` is bnn_pynq's ``FC`` (TFC is ``fc((64, 64, 64))``, SFC 256, LFC 1024): inputs in
[0, 1], ``2*x - 1``, an input quantizer, then QuantLinear, BatchNorm1d and a 1-bit QuantIdentity
per hidden layer, a last QuantLinear and bnn_pynq's TensorNorm. :func:`cnv` is a small ``CNV``:
the 8-bit Q1.7 input quantizer, 3x3 QuantConv2d without padding, BatchNorm2d, 1-bit activations,
2x2 max-pooling, then dense layers. :func:`bnn_pynq` returns bnn_pynq's own classes at W1A1.
This module imports torch and brevitas.
"""

import torch
from brevitas.export import export_qonnx
from brevitas.nn import QuantConv2d, QuantIdentity, QuantLinear
from brevitas_examples.bnn_pynq.models.CNV import CNV
from brevitas_examples.bnn_pynq.models.FC import FC
from brevitas_examples.bnn_pynq.models.common import CommonActQuant, CommonWeightQuant
from brevitas_examples.bnn_pynq.models.tensor_norm import TensorNorm
from torch import nn

__all__ = ["fc", "cnv", "bnn_pynq", "randomize_batch_norms", "export"]


def _binary_act():
    return QuantIdentity(act_quant=CommonActQuant, bit_width=1)


def _binary_linear(n, m):
    return QuantLinear(n, m, bias=False, weight_quant=CommonWeightQuant, weight_bit_width=1)


class _Net(nn.Module):
    def __init__(self, features, head):
        super().__init__()
        self.features, self.head = nn.Sequential(*features), nn.Sequential(*head)

    def forward(self, x):
        x = self.features(2.0 * x - torch.tensor([1.0]))
        return self.head(x.reshape(x.shape[0], -1))


def _input_quant(input_bits):
    """1: bnn_pynq's binary input; more: unsigned integers of [0, 1] in 2**bits - 1 steps (the
    quantizer then sees ``(x + 1)/2``, the pixel itself)."""
    if input_bits == 1:
        return [_binary_act()]
    return [_Affine(0.5, 0.5), QuantIdentity(act_quant=CommonActQuant, bit_width=input_bits, signed=False,
                                             min_val=0.0, max_val=1.0, narrow_range=False)]


class _Affine(nn.Module):
    def __init__(self, gain, bias):
        super().__init__()
        self.gain, self.bias = gain, bias

    def forward(self, x):
        return x * self.gain + self.bias


def fc(hidden=(64, 64, 64), inputs=784, classes=10, input_bits=1, extra=()):
    """bnn_pynq's ``FC`` (without dropout at export): ``hidden`` sizes, binary weights and
    activations; ``extra`` modules are inserted after the first hidden layer's batch norm."""
    layers, n = list(_input_quant(input_bits)), inputs
    for index, m in enumerate(hidden):
        layers += [_binary_linear(n, m), nn.BatchNorm1d(m)]
        layers += list(extra) if index == 0 else []
        layers.append(_binary_act())
        n = m
    layers += [_binary_linear(n, classes), TensorNorm()]
    net = _Net([], layers)
    for module in net.modules():
        if isinstance(module, QuantLinear):
            nn.init.uniform_(module.weight.data, -1, 1)
    return net


def cnv(channels=(8, 8, 16), pool_after=(1,), dense=(32,), in_channels=1, size=10, classes=10, groups=1,
        padding=0):
    """A small bnn_pynq ``CNV``: 3x3 binary convolutions (``channels``), 2x2 max-pooling after the
    convolutions listed in ``pool_after``, then dense layers. ``groups``/``padding`` make graphs
    the converter must refuse; both apply to the convolutions after the first."""
    features = [QuantIdentity(act_quant=CommonActQuant, bit_width=8, min_val=-1.0, max_val=1.0 - 2.0 ** -7,
                              narrow_range=False)]
    c, h = in_channels, size
    for index, out in enumerate(channels):
        pad = padding if index else 0
        features += [QuantConv2d(c, out, 3, bias=False, padding=pad, groups=groups if index else 1,
                                 weight_quant=CommonWeightQuant, weight_bit_width=1),
                     nn.BatchNorm2d(out, eps=1e-4), _binary_act()]
        h = h - 2 + 2 * pad
        if index in pool_after:
            features.append(nn.MaxPool2d(2))
            h //= 2
        c = out
    head, n = [], c * h * h
    for m in dense:
        head += [_binary_linear(n, m), nn.BatchNorm1d(m, eps=1e-4), _binary_act()]
        n = m
    head += [_binary_linear(n, classes), TensorNorm()]
    net = _Net(features, head)
    for module in net.modules():
        if isinstance(module, (QuantConv2d, QuantLinear)):
            nn.init.uniform_(module.weight.data, -1, 1)
    return net


def bnn_pynq(which):
    """bnn_pynq's own network ``which`` ("tfc", "sfc", "lfc": MLPs of 3x64, 3x256, 3x1024 on
    28x28 inputs; "cnv": the CIFAR-10 CNN) at W1A1 (a 1-bit input for the MLPs, 8-bit for CNV, as
    bnn_pynq's configurations), and one sample's shape."""
    if which == "cnv":
        return CNV(num_classes=10, weight_bit_width=1, act_bit_width=1, in_bit_width=8, in_ch=3), (3, 32, 32)
    size = {"tfc": 64, "sfc": 256, "lfc": 1024}[which]
    return FC(num_classes=10, weight_bit_width=1, act_bit_width=1, in_bit_width=1, in_channels=1,
              out_features=[size] * 3), (1, 28, 28)


@torch.no_grad()
def randomize_batch_norms(net, generator, spread=None):
    """Random batch-norm weights (either sign), biases and running statistics, scaled to each
    layer's fan-in so that the thresholds fall inside the reachable range of the sums."""
    fan = None
    for module in net.modules():
        if isinstance(module, (QuantConv2d, QuantLinear)):
            fan = module.weight[0].numel()
        if isinstance(module, (nn.BatchNorm1d, nn.BatchNorm2d)):
            m = module.num_features
            s = spread if spread is not None else fan ** 0.5
            module.weight.copy_(torch.randn(m, generator=generator))
            module.bias.copy_(torch.randn(m, generator=generator))
            module.running_mean.copy_(torch.randn(m, generator=generator) * s)
            module.running_var.copy_(torch.rand(m, generator=generator) * s * s + 0.1)
        if isinstance(module, TensorNorm):
            module.weight.copy_(torch.rand(1, generator=generator) + 0.5)
            module.bias.copy_(torch.randn(1, generator=generator))
            module.running_mean.copy_(torch.randn(1, generator=generator))
            module.running_var.copy_(torch.rand(1, generator=generator) + 0.5)
    return net


def export(net, path, input_shape):
    """Export ``net`` (in eval mode) as QONNX to ``path``; ``input_shape`` is one sample's."""
    net.eval()
    export_qonnx(net, torch.rand(1, *input_shape), path)
    return path
