"""Exact, pipelined integer arithmetic for the generated hardware.

A :class:`Pipeline` builds adder trees and constant multiplications inside one Amaranth
``Module``. Every value it handles is a :class:`Timed`: an Amaranth value together with the exact
integer range it can take and the pipeline *stage* at which it is valid (the number of registers
between the component's input and it). From the range follows the narrowest shape that holds
every value exactly, so no register or adder is wider than needed and none is too narrow.

A register stage is inserted after every ``every`` adder levels; values that meet at an adder at
different stages are first delayed to the later one, so the result is always consistent.
Registers hold data only (no reset): the ``valid`` pipelines that go with them are built by the
components.
"""

from dataclasses import dataclass

from amaranth.hdl import Cat, Const, Signal, signed, unsigned

__all__ = ["Timed", "Pipeline", "shape_for", "csd"]


def shape_for(lo, hi):
    """The narrowest shape that represents every integer in ``[lo, hi]``."""
    if lo >= 0:
        return unsigned(max(hi.bit_length(), 1))
    return signed(max(hi.bit_length(), (-lo - 1).bit_length()) + 1)


def csd(value):
    """Canonical signed digits of ``value``: ``[(shift, +1 or -1), ...]`` with ``value ==
    sum(sign << shift)`` and no two adjacent non-zero digits (the fewest additions)."""
    digits, shift = [], 0
    while value:
        if value & 1:
            digit = 2 - (value & 3)  # +1 if value % 4 == 1, -1 if value % 4 == 3
            digits.append((shift, digit))
            value -= digit
        value >>= 1
        shift += 1
    return digits


@dataclass(frozen=True)
class Timed:
    """An Amaranth ``value`` in ``[lo, hi]``, valid at pipeline ``stage`` after ``depth`` adder
    levels since the last register (``stage`` is ``None`` for constants: valid at any stage)."""

    value: object
    lo: int
    hi: int
    stage: int = 0
    depth: int = 0

    @property
    def is_const(self):
        return self.stage is None


class Pipeline:
    """Builds registered arithmetic into ``module``; counts what it builds in :attr:`stats`.

    With ``module=None`` it is a dry run: nothing is built, but ranges, stages and statistics come
    out the same, which is how components know their latency before they are elaborated.

    Parameters
    ----------
    module : amaranth.hdl.Module or None
    every : int
        Adder levels between register stages (at least 1).
    name : str
        Prefix for the registers' names.
    """

    def __init__(self, module, every, name):
        if every < 1:
            raise ValueError(f"every: expected at least 1 adder level per stage, found {every}")
        self.m = module
        self.every = every
        self.name = name
        self.stats = {"register_bits": 0, "adder_bits": 0, "adders": 0, "compare_bits": 0}
        self._delays = {}
        self._count = 0

    @property
    def dry(self):
        return self.m is None

    def const(self, value):
        return Timed(None if self.dry else Const(value, shape_for(value, value)), value, value, stage=None)

    @staticmethod
    def input(value, lo, hi, stage=0):
        """A value that enters the pipeline at ``stage``."""
        return Timed(value, lo, hi, stage=stage)

    @staticmethod
    def _bits(value, width):
        """The low ``width`` bits of ``value``'s two's complement, sign-extending a narrower one
        (a plain slice would stop at the value's own width)."""
        if len(value) < width:
            fill = value[-1] if value.shape().signed and len(value) else Const(0, 1)
            value = Cat(value, fill.replicate(width - len(value)))
        return value[:width]

    def _fit(self, value, lo, hi):
        if self.dry:
            return None
        shape = shape_for(lo, hi)
        if len(value) == shape.width and value.shape().signed == shape.signed:
            return value
        sliced = self._bits(value, shape.width)
        return sliced.as_signed() if shape.signed else sliced

    def register(self, x):
        """``x`` one stage later, through a register of exactly its range's width."""
        if x.is_const:
            return x
        self._count += 1
        shape = shape_for(x.lo, x.hi)
        self.stats["register_bits"] += shape.width
        if self.dry:
            return Timed(None, x.lo, x.hi, x.stage + 1, 0)
        reg = Signal(shape, name=f"{self.name}_r{self._count}", reset_less=True)
        self.m.d.sync += reg.eq(x.value)
        return Timed(reg, x.lo, x.hi, x.stage + 1, 0)

    def delay(self, x, stage):
        """``x`` at ``stage`` (``>= x.stage``), registered where it needs to wait; delays of the
        same value are built once and shared."""
        if x.is_const or x.stage == stage:
            return x
        if x.stage > stage:
            raise ValueError(f"cannot move a value from stage {x.stage} back to stage {stage}")
        if self.dry:
            return self.register(self.delay(x, stage - 1))
        key = (id(x.value), stage)
        if key not in self._delays:
            earlier = self.register(x) if x.stage + 1 == stage else self.register(self.delay(x, stage - 1))
            self._delays[key] = (x.value, earlier)  # keep x.value alive so that its id stays unique
        return self._delays[key][1]

    def finish(self, x):
        """``x`` registered: a component's outputs always come straight from a register."""
        return x if x.is_const else self.register(x) if x.depth or x.stage == 0 else x

    def _level(self, x):
        return self.register(x) if x.depth >= self.every else x

    def add(self, x, y, subtract=False):
        """``x + y`` (or ``x - y``) after aligning their stages; registered every ``every`` levels."""
        lo, hi = (x.lo - y.hi, x.hi - y.lo) if subtract else (x.lo + y.lo, x.hi + y.hi)
        if x.is_const and y.is_const:
            return self.const(lo)
        stage = max(s for s in (x.stage, y.stage) if s is not None)
        x, y = self.delay(x, stage), self.delay(y, stage)
        value = None if self.dry else x.value - y.value if subtract else x.value + y.value
        self.stats["adders"] += 1
        self.stats["adder_bits"] += shape_for(lo, hi).width
        depth = max(x.depth if not x.is_const else 0, y.depth if not y.is_const else 0) + 1
        return self._level(Timed(self._fit(value, lo, hi), lo, hi, stage, depth))

    def sum(self, terms):
        """The sum of ``terms`` (a list of :class:`Timed`) as a balanced adder tree."""
        terms = [t for t in terms if not (t.is_const and t.lo == 0)]
        if not terms:
            return self.const(0)
        constant = sum(t.lo for t in terms if t.is_const)
        terms = [t for t in terms if not t.is_const]
        if constant:
            terms.append(self.const(constant))
        while len(terms) > 1:
            pairs = [self.add(terms[i], terms[i + 1]) for i in range(0, len(terms) - 1, 2)]
            terms = pairs + terms[len(pairs) * 2:]
        return terms[0]

    def shift(self, x, amount):
        """``x * 2**amount`` (wiring only)."""
        if amount == 0:
            return x
        return Timed(None if self.dry else x.value << amount, x.lo << amount, x.hi << amount, x.stage, x.depth)

    def shift_right(self, x, amount):
        """``floor(x / 2**amount)`` (wiring only: an arithmetic shift)."""
        if amount == 0:
            return x
        lo, hi = x.lo >> amount, x.hi >> amount
        if x.is_const:
            return self.const(lo)
        value = None if self.dry else self._fit(x.value >> amount, lo, hi)
        return Timed(value, lo, hi, x.stage, x.depth)

    def low_bits(self, x, amount):
        """``x mod 2**amount`` (wiring only: the low bits of the two's complement)."""
        size = 1 << amount
        if x.is_const:
            return self.const(x.lo % size)
        lo, hi = (x.lo % size, x.hi % size) if x.lo >> amount == x.hi >> amount else (0, size - 1)
        return Timed(None if self.dry else self._bits(x.value, amount), lo, hi, x.stage, x.depth)

    def assume(self, x, lo, hi):
        """``x``, narrowed to ``[lo, hi]``: for values that are proven to lie there although
        interval arithmetic cannot see it (the remainder of a division, for example)."""
        if x.is_const:
            return x
        return Timed(None if self.dry else self._fit(x.value, lo, hi), lo, hi, x.stage, x.depth)

    def compare(self, x, op, constant):
        """The bit ``x >= constant`` (``op == ">="``), ``x <= constant`` or ``x < constant``,
        registered."""
        x = self.register(x) if x.depth else x
        self.stats["compare_bits"] += shape_for(x.lo, x.hi).width
        if self.dry:
            bit = None
        else:
            bit = {">=": x.value >= constant, "<=": x.value <= constant, "<": x.value < constant,
                   ">": x.value > constant}[op]
        return self.register(Timed(bit, 0, 1, x.stage, 0))

    def negate(self, x):
        return self.add(self.const(0), x, subtract=True)

    def multiply(self, x, constant):
        """``x * constant`` as shifts and additions of its canonical signed digits."""
        if constant == 0:
            return self.const(0)
        terms, negatives = [], []
        for shift, sign in csd(constant):
            (terms if sign > 0 else negatives).append(self.shift(x, shift))
        positive = self.sum(terms)
        if not negatives:
            return positive
        return self.add(positive, self.sum(negatives), subtract=True)
