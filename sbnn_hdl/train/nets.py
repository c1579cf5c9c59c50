"""SBNN models in PyTorch whose layers map one to one onto the ``.sbnn`` format's layers.

Every dense and conv layer is binary (the first one too) and followed by batch norm; hidden
layers output bits ``v = (sign(y) + 1) / 2`` in {0, 1}, exactly the values the next layer of the
format reads, so padding holds the format's ``pad_value`` and max-pooling after the sign is the
format's OR. Training pools the normalised values before the sign by default (``pool="values"``):
a window's largest value has the bit of the window's OR, so the bits are the same, and the
gradient goes to the value that set the bit. The last layer's scores are
``gain * (z - m) / sd + bias[j]`` with one scalar normalisation for all classes (not a per-class
batch norm): that keeps the classes on one scale, so the argmax folds exactly into integers.

Architectures (``--arch``): ``mlp:256,256`` (hidden widths), ``cnn:32,p,64,p,fc128`` (3x3 convs
with padding 1, ``p`` a 2x2 max-pool, ``fcN`` dense hidden layers); the output layer is added.
Activations flow as NCHW inside convolutions and are flattened in the format's HWC order.
"""

import math
import re

import numpy as np
import torch
from torch import nn
from torch.nn import functional as F

from ..golden import encode_input
from ..model import InputSpec
from .quant import binary_sign, domain_params

__all__ = ["parse_arch", "with_widths", "input_spec", "SbnnNet", "encode_batch", "POOLS"]

#: How training max-pools: the normalised values before the sign, or the bits after it (the same
#: forward pass; the gradient differs).
POOLS = ("values", "bits")


def parse_arch(arch):
    """``"mlp:256,256"`` -> ``("mlp", [("fc", 256), ("fc", 256)])``; ``"cnn:16,p,fc64"`` ->
    ``("cnn", [("conv", 16), ("pool", 2), ("fc", 64)])``. Raises ValueError with the expected form."""
    match = re.fullmatch(r"(mlp|cnn):([A-Za-z0-9,]*)", arch or "")
    if not match:
        raise ValueError(f"expected 'mlp:W1,W2,...' or 'cnn:C1,p,C2,p,fcW', found {arch!r}")
    kind, body = match.groups()
    layers = []
    for token in filter(None, body.split(",")):
        if token.isdigit() and int(token) > 0:
            layers.append(("fc" if kind == "mlp" else "conv", int(token)))
        elif kind == "cnn" and token == "p":
            layers.append(("pool", 2))
        elif kind == "cnn" and re.fullmatch(r"fc[1-9][0-9]*", token):
            layers.append(("fc", int(token[2:])))
        else:
            raise ValueError(f"expected layer widths{', p or fcN' if kind == 'cnn' else ''} in {arch!r}, "
                             f"found {token!r}")
    if kind == "cnn":
        kinds = [k for k, _ in layers]
        if not kinds or kinds[0] != "conv":
            raise ValueError(f"expected a cnn to start with a conv width, found {arch!r}")
        if "fc" in kinds and any(k != "fc" for k in kinds[kinds.index("fc"):]):
            raise ValueError(f"expected fcN layers only after the last conv and pool, found {arch!r}")
    return kind, layers


def with_widths(arch, widths):
    """``arch`` with its hidden layers' widths (conv channels and fc widths, in order) replaced by
    ``widths``: ``with_widths("cnn:64,p,128,fc128", [32, 64, 96])`` -> ``"cnn:32,p,64,fc96"``.
    Raises ValueError when ``widths`` has another length."""
    kind, layers = parse_arch(arch)
    hidden = [layer for layer in layers if layer[0] != "pool"]
    if len(widths) != len(hidden):
        raise ValueError(f"expected {len(hidden)} widths for {arch!r}, found {len(widths)}")
    widths = iter(widths)
    tokens = ["p" if what == "pool" else f"{'fc' if what == 'fc' and kind == 'cnn' else ''}{next(widths)}"
              for what, _ in layers]
    return f"{kind}:{','.join(tokens)}"


def input_spec(kind, image_shape, bits, encoding, planes):
    """The model's :class:`InputSpec`: an MLP reads the flattened image, a CNN the ``[H, W, C]`` image."""
    shape = (math.prod(image_shape),) if kind == "mlp" else tuple(image_shape)
    return InputSpec(shape=shape, bits=bits, encoding=encoding, planes=tuple(planes))


def encode_batch(spec, x, conv_first):
    """Samples ``x`` (uint8 ``[N, *spec.shape]``) as the float tensor the first layer reads:
    :func:`sbnn_hdl.golden.encode_input`, in NCHW order for a conv first layer."""
    x = np.asarray(x).reshape(len(x), *spec.shape)  # an MLP reads the image flattened in C order
    # Copied only when read-only or strided (an integer CNN input is a view of the dataset's
    # array): torch warns on arrays it cannot write.
    v = torch.from_numpy(np.require(encode_input(spec, x, flat=not conv_first), requirements=["C", "W"]))
    if conv_first:
        v = v.permute(0, 3, 1, 2)
    return v.float()


class BinaryLayer(nn.Module):
    """A binary dense or 3x3 conv layer: effective weights ``tau*sign(w) + phi``, then batch norm
    (hidden) or the shared output normalisation (last)."""

    def __init__(self, kind, name, fan_shape, outputs, domain, last, in_scale, in_shape=None,
                 pad_value=0, init=0.01):
        super().__init__()
        self.kind, self.name, self.domain, self.last = kind, name, domain, last
        self.in_scale, self.in_shape, self.pad_value = float(in_scale), in_shape, pad_value
        # Latent weights uniform in +-init, clamped to [-1, 1] after each step (clipped STE region).
        self.weight = nn.Parameter(torch.empty(outputs, *fan_shape).uniform_(-init, init))
        self.tau = nn.Parameter(torch.ones(())) if domain == "learned" else None
        self.phi = nn.Parameter(torch.zeros(())) if domain == "learned" else None
        if last:
            self.gain = nn.Parameter(torch.ones(()))
            self.bias = nn.Parameter(torch.zeros(outputs))
            self.register_buffer("out_mean", torch.zeros(()))
            self.register_buffer("out_var", torch.ones(()))
        else:
            self.bn = nn.BatchNorm2d(outputs) if kind == "conv" else nn.BatchNorm1d(outputs)
        self.eps, self.momentum = 1e-5, 0.1

    @property
    def fan_in(self):
        return math.prod(self.weight.shape[1:])

    def binary_weight(self):
        """``sign(w)`` in {-1, +1} with the clipped straight-through gradient."""
        return binary_sign(self.weight, "ste")

    def tau_phi(self):
        return domain_params(self.domain, self.weight, self.tau, self.phi)

    def linear(self, v, wbar):
        tau, phi = self.tau_phi()
        w = tau * wbar + phi
        v = v / self.in_scale if self.in_scale != 1 else v
        if self.kind == "fc":
            return v @ w.t()
        if self.pad_value:
            v = F.pad(v, (1, 1, 1, 1), value=1.0)
            return F.conv2d(v, w)
        return F.conv2d(v, w, padding=1)

    def normalise(self, z):
        if not self.last:
            return self.bn(z)
        if self.training:
            mean, var = z.mean(), z.var(unbiased=False)
            with torch.no_grad():
                self.out_mean.lerp_(mean.detach(), self.momentum)
                self.out_var.lerp_(var.detach() * z.numel() / max(z.numel() - 1, 1), self.momentum)
        else:
            mean, var = self.out_mean, self.out_var
        return self.gain * (z - mean) / torch.sqrt(var + self.eps) + self.bias


class SbnnNet(nn.Module):
    """A whole SBNN. ``forward`` takes the encoded input (:func:`encode_batch`) and returns the
    scores; hidden activations use estimator ``ste`` with IR-Net parameter :attr:`t`; a max-pool
    after a layer pools its normalised values before the sign (``pool="values"``) or its bits
    (``"bits"``), the same bits either way. Raises ValueError for another ``pool``."""

    def __init__(self, spec, arch, classes, domain="learned", ste="ste", pad_value=0, pool="values"):
        super().__init__()
        if pool not in POOLS:
            raise ValueError(f"expected pool {' or '.join(POOLS)}, found {pool!r}")
        kind, plan = parse_arch(arch)
        self.spec, self.arch, self.domain, self.ste, self.pad_value = spec, arch, domain, ste, pad_value
        self.pool = pool
        self.conv_first = kind == "cnn"
        self.t = 1.0
        layers, names = nn.ModuleList(), []
        shape, width = None, None
        if self.conv_first:
            shape = tuple(spec.features_shape)
        else:
            width = math.prod(spec.features_shape)
        in_scale = spec.max_feature
        convs = fcs = pools = 0
        self.order = []  # ("layer", index) or ("pool", (in_shape))
        for what, size in plan + [("out", classes)]:
            if what == "pool":
                pools += 1
                self.order.append(("pool", f"pool{pools}", shape))
                shape = (shape[0] // 2, shape[1] // 2, shape[2])
                continue
            if what == "conv":
                convs += 1
                layer = BinaryLayer("conv", f"conv{convs}", (shape[2], 3, 3), size, domain, False, in_scale,
                                    in_shape=shape, pad_value=pad_value)
                shape = (shape[0], shape[1], size)
            else:
                if width is None:
                    width = math.prod(shape)
                fcs += what == "fc"
                name = "out" if what == "out" else f"fc{fcs}"
                layer = BinaryLayer("fc", name, (width,), size, domain, what == "out", in_scale)
                width = size
            in_scale = 1
            self.order.append(("layer", len(layers)))
            layers.append(layer)
        self.binary_layers = layers
        self._wbars = []

    def layers_in_order(self):
        """``[(kind, item)]``: ``("layer", BinaryLayer)`` or ``("pool", (name, in_shape))``."""
        return [("layer", self.binary_layers[i[1]]) if i[0] == "layer" else ("pool", (i[1], i[2]))
                for i in self.order]

    def forward(self, v, *, until=None, inputs=None):
        """The scores of encoded input ``v``; with ``until`` (one of :attr:`binary_layers`), that
        layer's output before its normalisation instead (what batch-norm statistics are taken of).
        With ``inputs`` (a list), the input of every binary layer it reaches is appended to it
        (NCHW for a conv layer, flattened in the format's order for a dense one)."""
        self._wbars = []
        flat_done = not self.conv_first
        order = self.layers_in_order()
        pooled = 0  # pools already applied to the values before the sign
        for n, (kind, item) in enumerate(order):
            if kind == "pool":
                if pooled:
                    pooled -= 1
                else:
                    v = F.max_pool2d(v, 2)
                continue
            layer = item
            if layer.kind == "fc" and not flat_done:
                v = v.permute(0, 2, 3, 1).flatten(1)  # the format's (y*W + x)*C + c order
                flat_done = True
            if inputs is not None:
                inputs.append(v)
            wbar = layer.binary_weight()
            self._wbars.append(wbar)
            z = layer.linear(v, wbar)
            if layer is until:
                return z
            y = layer.normalise(z)
            if layer.last:
                return y
            if self.pool == "values":
                # The OR of a window's bits is the bit of its largest value, so pooling the values
                # first gives the same bits, and the gradient reaches the value that decided the bit
                # (OR-pooling the bits sends it to the window's first 1, or its first 0 if none).
                while n + 1 + pooled < len(order) and order[n + 1 + pooled][0] == "pool":
                    y = F.max_pool2d(y, 2)
                    pooled += 1
            v = (binary_sign(y, self.ste, self.t) + 1) / 2
        raise AssertionError("the last layer returns")

    def binary_weights(self):
        """The ``sign(w)`` tensors of the last forward pass (for the sparsity penalty)."""
        return self._wbars

    @torch.no_grad()
    def clamp_(self, limit=1.0):
        for layer in self.binary_layers:
            layer.weight.clamp_(-limit, limit)

    @torch.no_grad()
    def density(self):
        """``(ones, weights)`` per layer: how many binary weights are +1 (connections)."""
        return [(int((layer.weight >= 0).sum()), layer.weight.numel()) for layer in self.binary_layers]
