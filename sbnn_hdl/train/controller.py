"""The sparsity controller: which binary weights each Eq. 16 penalty counts (budget groups), the
target each group is held to at every step, and how hard its weights are pushed toward 0.

Two modes (``Config.controller``):

- ``fixed``: the paper's regulariser. Every group is held to its final target from the first
  step and pushed with the ``lambda`` of Eq. 18 for a fixed ``gamma``.
- ``ramp`` (the default): group ``g``'s target ``s_g(t)`` moves from the group's sparsity at the
  start of the run (about 50% for fresh weights; whatever a fine-tune starts from) to its final
  target over the first ``ramp`` share of the steps (:meth:`SparsityController.scheduled`), and a
  group is pushed only while it is behind that scheduled target (``j_g > 0``, Eq. 16 against
  ``s_g(t)``), so that the weights go while the net learns instead of all in the first epoch.
  The push is set in units of the task's own gradient: each weight of a group behind its
  schedule gets the gradient ``kappa_g * sigma_g`` (``sigma_g`` the RMS of the task loss's
  gradient over the group's weights), and feedback moves ``kappa_g`` up while the group is behind
  and down while it is ahead, within :data:`PUSH_RANGE`.

Why not Eq. 18 against the scheduled target: while the schedule is tracked, ``j_g`` stays below
``J_FLOOR``, so Eq. 18's ``lambda`` sits at its cap ``100*gamma/(1-gamma)*L`` and the push per
weight, ``lambda/(2N)``, is a multiple of ``L/N`` whose ratio to the weights' gradients differs by
orders of magnitude between networks. Adam divides every weight's step by the RMS of its
gradient, so a push well above a weight's gradient moves it by a whole learning rate per step,
and a few such steps move nearly every weight across 0 (measured on a 3-conv CNN at 90%: its
shared group went from 49.5% to 86.4% sparse in the first 8 steps, where the schedule asked for
50.9%), after which Adam's second moment, full of the push, mutes the
task's gradient for hundreds of steps. A push in units of ``sigma_g`` stays comparable to the
task's gradient on any network, so that only the weights the task defends least cross 0.

Budgets (:func:`budgets`): a layer named in ``--layer-sparsity`` has a group of its own with that
target; by default (``edge_budgets``) the first and the last layer get a gentler budget of their
own when they hold fewer weights than the middle layers together (:func:`edge_density`); the
other layers share one group, whose target is solved so that the whole network's share of
0-valued weights is the global target. In ramp mode a layer of a shared group is not pushed
while its density is below :data:`LAYER_FLOOR` of the group's scheduled density, so that the
budget is not met by emptying one layer.

Determinism: the schedule is a function of the step; the starting sparsities, the pushes and the
gradient averages are the controller's state (:meth:`SparsityController.state_dict`), plain
floats saved in every checkpoint, so a resumed run continues exactly.
"""

import math

import torch

from .quant import eq18_lambda, sparsity_penalty

__all__ = ["CONTROLLERS", "RAMP_SHAPES", "PUSH_START", "FEEDBACK_RATE", "FEEDBACK_DOWN", "FEEDBACK_BAND", "PUSH_RANGE",
           "SIGMA_AVERAGE", "LAYER_FLOOR", "BudgetError", "edge_density", "budgets", "ramp_share", "SparsityController",
           "kernel_shares"]

CONTROLLERS = ("ramp", "fixed")
RAMP_SHAPES = ("cosine", "linear")

#: The push ``kappa`` a group starts with: the penalty's gradient on each weight, as a share of the RMS
#: of the task loss's gradient over the group's weights.
PUSH_START = 0.5
#: Per step, ``kappa`` grows (shrinks) by up to ``exp(FEEDBACK_RATE)`` while a group is behind (ahead of) its
#: scheduled target: at most a factor 2 in 14 steps.
FEEDBACK_RATE = 0.05
#: The rate at which ``kappa`` shrinks while a group is ahead, as a share of :data:`FEEDBACK_RATE`.
FEEDBACK_DOWN = 0.25
#: The gap (a share of the group's weights) at which the feedback acts at its full rate; smaller gaps
#: act in proportion, so a group that tracks its schedule keeps its push.
FEEDBACK_BAND = 0.01
#: The bounds of ``kappa``. At 1 a weight the task does not defend moves by about 0.7 learning rates per
#: step; at 4, by nearly a whole one: enough to reach 99% in a few epochs. Above that, Adam's second
#: moment fills with the push and the task's steps shrink for the rest of a short run.
PUSH_RANGE = (0.01, 4.0)
#: The weight of the past in the running averages of the layers' mean square task gradients (about
#: 10 steps).
SIGMA_AVERAGE = 0.9
#: In ramp mode, a layer of a shared group is not pushed while its density is below this share of
#: the group's scheduled density.
LAYER_FLOOR = 0.25


class BudgetError(ValueError):
    """Budgets that cannot be met (the message says why; the caller names the option)."""


def edge_density(density, edge_weights, middle_weights):
    """The default target density of the first or the last layer: ``D + min(sqrt(D) - D, D*R/(4*N_e))``
    for global target density ``D = 1 - S``, a layer of ``N_e = edge_weights`` weights and ``R =
    middle_weights`` weights in the layers between the first and the last.

    ``sqrt(D)`` is halfway between dense and the global density on a log scale (90% -> 68%, 95% ->
    78%, 99% -> 90% sparse): the layer stays usable (a first 3x3 conv on 2 planes has 18 weights
    per filter; at 90% that is 1.8 connections). The second term caps the extra connections it
    takes at a quarter of the middle layers' share ``D*R``, so the middle layers stay at least
    half as dense as the global target even when both ends take their maximum."""
    return density + min(math.sqrt(density) - density, density * middle_weights / (4 * edge_weights))


def budgets(layers, sparsity, overrides=None, edges=True):
    """The budget groups of a network whose binary layers are ``layers``, ``[(name, weights)]`` in
    order, for global target ``sparsity``: ``[(group, [layer names], target sparsity)]``, the
    layers with budgets of their own first (group named as the layer), then ``"rest"`` (or
    ``"all"`` when no layer has its own), whose target makes the total share of 0-valued weights
    ``sparsity``:

        S_rest = 1 - (D*N - sum_l d_l*N_l) / N_rest,    D = 1 - sparsity, d_l = 1 - S_l,

    over the layers ``l`` with their own target ``S_l`` (``N`` all weights, ``N_rest`` those of the
    others). ``overrides``: ``{layer name: target}`` (``--layer-sparsity``). ``edges``: the default
    rule, :func:`edge_density` for the first and the last layer when the network has 3 or more
    binary layers and that layer holds fewer weights than the middle ones together (an MLP's first
    layer usually holds most of the weights, and stays in the shared group); an override wins. When
    no layer is left for the rest group, the rule's budgets are dropped (those layers form it).
    Raises :class:`BudgetError` for an unknown layer name or targets that cannot add up."""
    overrides = dict(overrides or {})
    names = [name for name, _ in layers]
    unknown = [name for name in overrides if name not in names]
    if unknown:
        raise BudgetError(f"expected a layer name of this network ({', '.join(names)}), found {unknown[0]!r}")
    size = dict(layers)
    total = sum(size.values())
    density = 1 - sparsity
    own = {}
    if edges and len(layers) >= 3:
        middle = sum(n for _, n in layers[1:-1])
        for name in dict.fromkeys((names[0], names[-1])):
            if size[name] < middle:
                own[name] = 1 - edge_density(density, size[name], middle)
    if all(name in overrides or name in own for name in names):
        own = {}  # the rule's budgets yield: some layer must absorb the rest of the global budget
    own.update(overrides)
    if not own:
        return [("all", names, sparsity)]
    rest = [name for name in names if name not in own]
    if not rest:
        implied = 1 - sum((1 - own[n]) * size[n] for n in names) / total
        raise BudgetError(f"expected a layer without a budget of its own to take the rest of the global "
                          f"{sparsity:g}, found every layer listed (their budgets give {implied:.4f})")
    rest_density = (density * total - sum((1 - s) * size[n] for n, s in own.items())) / sum(size[n] for n in rest)
    if not 0 < rest_density < 1:
        raise BudgetError(f"expected budgets that leave the other layers ({', '.join(rest)}) a target strictly "
                          f"between 0 and 1 for a total of {sparsity:g}, found {1 - rest_density:.4f}")
    ordered = [(name, [name], own[name]) for name in names if name in own]
    return ordered + [("rest", rest, 1 - rest_density)]


def ramp_share(progress, shape="cosine"):
    """How far along its ramp a target is at ``progress`` (the share of the ramp's steps done, in
    [0, 1]): ``(1 - cos(pi*p)) / 2`` (slow at both ends) or ``p``."""
    p = min(max(progress, 0.0), 1.0)
    if shape == "cosine":
        return 0.5 * (1 - math.cos(math.pi * p))
    if shape == "linear":
        return p
    raise ValueError(f"unknown ramp shape {shape!r}")


class SparsityController:
    """The penalty term of every step for budget groups ``groups`` (``[(group, [layer indices],
    target)]``) of a net whose binary layers have ``sizes`` weights, over ``total_steps`` steps;
    see the module docstring for the two modes (``gamma``: Eq. 18's, for the fixed mode). State:
    :attr:`start` (each group's sparsity when the run began), :attr:`push` (each group's ``kappa``)
    and :attr:`ms` (each layer's mean square task gradient, a running average), all plain floats,
    in :meth:`state_dict`."""

    def __init__(self, groups, sizes, *, mode, gamma, ramp, shape, total_steps):
        if mode not in CONTROLLERS:
            raise ValueError(f"unknown controller {mode!r}")
        self.groups, self.mode, self.gamma, self.shape = groups, mode, gamma, shape
        self.layer_sizes = list(sizes)
        self.sizes = [sum(sizes[i] for i in layers) for _, layers, _ in groups]
        self.ramp_steps = ramp * total_steps if mode == "ramp" else 0
        self.start = {name: target for name, _, target in groups}  # replaced by start_from() or a checkpoint
        self.push = {name: PUSH_START for name, _, _ in groups}
        self.ms = [None] * len(sizes)
        self._applied = [0.0] * len(sizes)  # the penalty's gradient on each layer's weights at this step

    def start_from(self, density):
        """Take the starting sparsity of every group from ``density``, ``[(ones, weights)]`` per layer."""
        for name, layers, _ in self.groups:
            self.start[name] = 1 - sum(density[i][0] for i in layers) / sum(density[i][1] for i in layers)

    def state_dict(self):
        """Plain data: the starting sparsities, the pushes and the mean square gradient averages."""
        return {"start": dict(self.start), "push": dict(self.push), "ms": list(self.ms)}

    def load_state_dict(self, state):
        """Restore :meth:`state_dict`; KeyError when it belongs to other groups or layers."""
        names = sorted(name for name, _, _ in self.groups)
        if sorted(state["start"]) != names or sorted(state["push"]) != names or \
                len(state["ms"]) != len(self.ms):
            raise KeyError(f"controller state for groups {sorted(state['start'])}, expected {names}")
        self.start = {name: float(state["start"][name]) for name in names}
        self.push = {name: float(state["push"][name]) for name in names}
        self.ms = [None if v is None else float(v) for v in state["ms"]]

    def scheduled(self, name, target, step):
        """Group ``name``'s target at step ``step`` (from 0): its final ``target`` in fixed mode, when
        the group starts at or above it, or once the ramp is over; on the ramp the density (the share
        of 1-valued weights) falls geometrically from the start's ``d0`` to the target's ``dT``,
        ``d0 * (dT/d0)**r`` with ``r`` :func:`ramp_share`, so that every step removes about the same
        share of the connections left (a ramp linear in sparsity would remove most of the last ones
        in a few steps at high targets)."""
        start = self.start[name]
        if self.mode == "fixed" or start >= target or self.ramp_steps <= 0:
            return target
        share = ramp_share((step + 1) / self.ramp_steps, self.shape)
        return 1 - (1 - start) * ((1 - target) / (1 - start)) ** share

    def overall(self, step):
        """The whole network's scheduled target at ``step``: the groups' targets weighted by their sizes."""
        zeros = sum(n * self.scheduled(name, target, step) for (name, _, target), n in zip(self.groups, self.sizes))
        return zeros / sum(self.sizes)

    def penalty(self, task, wbars, step):
        """``(term, {group: lambda})``: the term added to the task loss ``task`` at step ``step`` for
        the binary weights ``wbars`` (one tensor per layer, in order) of this step's forward, and the
        ``lambda`` each group got.

        Fixed mode: ``lambda * sum_g P_g`` with ``P_g = (N_g/N) * j_g`` (the group's excess of
        1-valued weights as a share of all ``N``: every weight above its budget gets the same push
        ``lambda/(2N)``; with one group ``P = j``, Eq. 16) and ``lambda`` from Eq. 18 for ``P``.

        Ramp mode: a group behind its scheduled target ``s_g`` (``j_g > 0``) adds
        ``lambda_g * sum_l (U_l - (1 - s_g) N_l) / N`` over its layers ``l`` that are not below
        :data:`LAYER_FLOOR` of the group's scheduled density, with ``lambda_g = 2N * kappa_g * sigma_g``:
        the gradient on each of their weights is ``kappa_g * sigma_g``, ``sigma_g`` the RMS of the task
        loss's gradient over the group's weights (a running average; nothing is pushed before it is
        known, at the first step). Then the feedback moves every ``kappa_g``."""
        total = sum(self.layer_sizes)
        term, used = 0.0, {}
        if self.mode == "fixed":
            excess = [sparsity_penalty([wbars[i] for i in layers], target) * (n / total)
                      for (_, layers, target), n in zip(self.groups, self.sizes)]
            overall = float(sum(p.detach() for p in excess))
            lam = eq18_lambda(task, overall, self.gamma)
            for (name, _, _), p in zip(self.groups, excess):
                term = term + lam * p
                used[name] = lam if float(p.detach()) > 0 else 0.0
            return term, used
        self._applied = [0.0] * len(self.layer_sizes)
        for (name, layers, target), n in zip(self.groups, self.sizes):
            goal = self.scheduled(name, target, step)
            with torch.no_grad():
                ones = {i: float((wbars[i] > 0).sum()) for i in layers}
            behind = sum(ones.values()) / n - (1 - goal)  # j_g: the share of the group's weights above its budget
            used[name] = 0.0
            if behind > 0 and all(self.ms[i] is not None for i in layers):
                sigma = math.sqrt(sum(self.ms[i] * self.layer_sizes[i] for i in layers) / n)
                lam = 2 * total * self.push[name] * sigma
                for i in layers:
                    if ones[i] / self.layer_sizes[i] < LAYER_FLOOR * (1 - goal):
                        continue  # an emptied layer would stop the net learning: the others give way
                    u = ((wbars[i] + 1) / 2).sum()
                    term = term + lam * (u - (1 - goal) * self.layer_sizes[i]) / total
                    self._applied[i] = lam / (2 * total)
                used[name] = lam
            gap = min(max(behind / FEEDBACK_BAND, -1.0), 1.0)
            low, high = PUSH_RANGE
            rate = FEEDBACK_RATE if gap > 0 else FEEDBACK_RATE * FEEDBACK_DOWN
            self.push[name] = min(max(self.push[name] * math.exp(rate * gap), low), high)
        return term, used

    def observe(self, grads):
        """After the backward pass of a step: update every layer's mean square task gradient from
        ``grads`` (the weight gradients, one per layer), less the penalty's own gradient, which is the
        same on every pushed weight (every latent weight is within the clipped estimator's [-1, 1])."""
        if self.mode != "ramp":
            return
        with torch.no_grad():
            for i, grad in enumerate(grads):
                ms = float((grad - self._applied[i]).square().mean())
                self.ms[i] = ms if self.ms[i] is None else SIGMA_AVERAGE * self.ms[i] + (1 - SIGMA_AVERAGE) * ms


def kernel_shares(mask):
    """``{"k0", "k1", "k2plus"}``: the shares of the kernels of a conv layer's ``mask`` (a boolean
    tensor ``[Cout, Cin, kh, kw]``, as the training net holds its weights; a kernel is one ``kh x kw``
    slice) with no, exactly one, and two or more 1-valued weights."""
    hamming = mask.reshape(*mask.shape[:2], -1).sum(-1)
    count = hamming.numel()
    return {"k0": float((hamming == 0).sum()) / count, "k1": float((hamming == 1).sum()) / count,
            "k2plus": float((hamming >= 2).sum()) / count}
