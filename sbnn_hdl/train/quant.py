"""Quantizers of the SBNN method (paper Sections 3.1 to 3.4): the sign, its straight-through
estimators, the three weight domains and the sparsity regulariser.

Conventions: ``sign(0) = +1`` everywhere (weights and activations), so a latent weight of exactly
0 is a 1-valued connection and a pre-activation of exactly 0 fires; the integer export keeps both
(``acc >= t``).
"""

import math

import torch

__all__ = ["sign", "binary_sign", "STES", "ir_net_t", "DOMAINS", "domain_params", "closed_form",
           "sparsity_penalty", "eq18_lambda", "J_FLOOR"]


def sign(x):
    """``+1`` where ``x >= 0``, ``-1`` elsewhere (no zeros, unlike ``torch.sign``)."""
    return (x >= 0).to(x.dtype) * 2 - 1


class _Sign(torch.autograd.Function):
    """Forward: :func:`sign`. Backward: the chosen estimator's derivative times the incoming gradient."""

    @staticmethod
    def forward(ctx, x, kind, t):
        ctx.save_for_backward(x)
        ctx.kind, ctx.t = kind, t
        return sign(x)

    @staticmethod
    def backward(ctx, grad):
        (x,) = ctx.saved_tensors
        return grad * ste_grad(x, ctx.kind, ctx.t), None, None


def ste_grad(x, kind, t=1.0):
    """The derivative that estimator ``kind`` substitutes for d sign(x)/dx.

    - ``ste``: clipped straight-through, 1 for ``|x| <= 1`` else 0;
    - ``irnet``: IR-Net's error-decay estimator ``k*t*(1 - tanh(t*x)**2)``, ``k = max(1/t, 1)``;
    - ``approxsign``: Bi-Real's ApproxSign, ``2 - 2|x|`` for ``|x| < 1`` else 0.
    """
    if kind == "ste":
        return (x.abs() <= 1).to(x.dtype)
    if kind == "irnet":
        k = max(1.0 / t, 1.0)
        return k * t * (1 - torch.tanh(t * x) ** 2)
    if kind == "approxsign":
        return torch.clamp(2 - 2 * x.abs(), min=0)
    raise ValueError(f"unknown estimator {kind!r}")


STES = ("ste", "irnet", "approxsign")


def binary_sign(x, kind="ste", t=1.0):
    """``sign(x)`` with the gradient of estimator ``kind`` (see :func:`ste_grad`)."""
    return _Sign.apply(x, kind, float(t))


def ir_net_t(progress, t_min=0.1, t_max=10.0):
    """IR-Net's schedule: ``t = t_min * 10**(progress * log10(t_max / t_min))``, progress in [0, 1]."""
    return t_min * 10 ** (min(max(progress, 0.0), 1.0) * math.log10(t_max / t_min))


DOMAINS = ("symmetric", "closed-form", "learned")


def closed_form(w):
    """Eq. 15: ``(tau*, phi*)`` minimising ``||w - (tau*sign(w) + phi)||_2`` for latent weights ``w``.

    With ``p`` the share of +1 weights, ``s = 2p - 1``:
    ``tau* = (||w||_1 - s*sum(w)) / (N (1 - s**2))``, ``phi* = (sum(w) - s*||w||_1) / (N (1 - s**2))``.
    When every weight has one sign (``s = +-1``) only ``tau + s*phi`` is determined; then
    ``tau = mean|w|`` and ``phi = mean(w) - s*tau``, which still gives the optimum.
    """
    w = w.detach().double()
    n = w.numel()
    s = 2 * (w >= 0).double().mean() - 1
    l1, total = w.abs().sum(), w.sum()
    denominator = n * (1 - s * s)
    if denominator <= 0:
        tau = l1 / n
        return tau.float(), (total / n - s * tau).float()
    return ((l1 - s * total) / denominator).float(), ((total - s * l1) / denominator).float()


def domain_params(domain, w, tau=None, phi=None):
    """``(tau, phi)`` of a layer for domain ``domain``; the effective weight is ``tau*sign(w) + phi``.

    ``symmetric``: ``phi = 0``, ``tau = mean|w|`` (XNOR-Net); ``closed-form``: Eq. 15 recomputed
    from ``w``; ``learned``: the layer's trainable ``tau``, ``phi``.
    """
    if domain == "symmetric":
        return w.detach().abs().mean(), torch.zeros((), dtype=w.dtype)
    if domain == "closed-form":
        return closed_form(w)
    if domain == "learned":
        return tau, phi
    raise ValueError(f"unknown domain {domain!r}")


def sparsity_penalty(binary_weights, target_sparsity):
    """Eq. 16: ``j = ReLU(U/N - EC)`` over all binary weights ``{-1, +1}`` (``U`` = number of +1,
    ``EC = 1 - target_sparsity``), differentiable through the weights' estimator."""
    n = sum(w.numel() for w in binary_weights)
    ones = sum(((w + 1) / 2).sum() for w in binary_weights)
    return torch.relu(ones / n - (1 - target_sparsity))


#: The smallest ``j`` that Eq. 18 divides by (see :func:`eq18_lambda`).
J_FLOOR = 0.01


def eq18_lambda(task_loss, penalty, gamma, j_floor=J_FLOOR):
    """Eq. 18: the ``lambda`` for which ``lambda*j = gamma * (L + lambda*j)``: ``gamma*L / (j*(1-gamma))``
    when ``j > 0``, else 0. Computed from detached values, a fresh one every step.

    ``j`` in the denominator is floored at ``j_floor`` (1% of the weights above the target): as
    ``j -> 0`` the penalty's gradient ``lambda/(2N)`` grows without bound, and one huge gradient
    fills Adam's second moment, which then mutes the task's gradients for hundreds of steps (a
    50% target collapsed to 19% accuracy that way). Above the floor this is exactly Eq. 18.
    """
    j = float(penalty.detach()) if torch.is_tensor(penalty) else float(penalty)
    if j <= 0 or gamma <= 0:
        return 0.0
    task_loss = float(task_loss.detach()) if torch.is_tensor(task_loss) else float(task_loss)
    return gamma * task_loss / (max(j, j_floor) * (1 - gamma))
