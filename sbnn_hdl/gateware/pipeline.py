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

__all__ = ["Timed", "Pipeline", "shape_for", "csd", "delayed"]


def shape_for(lo, hi):
    """The narrowest shape that represents every integer in ``[lo, hi]``."""
    if lo >= 0:
        return unsigned(max(hi.bit_length(), 1))
    return signed(max(hi.bit_length(), (-lo - 1).bit_length()) + 1)


def delayed(m, signal, cycles, name, stats):
    """``signal`` through a chain of ``cycles`` registers in module ``m`` (named ``name_d1``,
    ``name_d2``, ...), their bits added to ``stats["register_bits"]``; ``signal`` itself for 0."""
    for stage in range(cycles):
        register = Signal(len(signal), name=f"{name}_d{stage + 1}")
        m.d.sync += register.eq(signal)
        stats["register_bits"] += len(signal)
        signal = register
    return signal


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

    def fanout(self, x, stage, group):
        """``x`` at ``stage``, through a last register of its own for ``group`` (any hashable):
        the copy of a value with many loads that one group of them reads, so that no register
        drives them all. (Yosys keeps the copies apart: checked on ``examples/digits.sbnn``,
        whose flip-flop count grows by 388 for the copies' 472 register bits; synthesis drops
        their constant bits.)"""
        if x.is_const:
            return x
        if self.dry:
            return self.register(self.delay(x, stage - 1))
        key = (id(x.value), stage, group)
        if key not in self._delays:
            self._delays[key] = (x.value, self.register(self.delay(x, stage - 1)))
        return self._delays[key][1]

    def finish(self, x):
        """``x`` registered: a component's outputs always come straight from a register."""
        return x if x.is_const else self.register(x) if x.depth or x.stage == 0 else x

    def _level(self, x):
        return self.register(x) if x.depth >= self.every else x

    def add(self, x, y, subtract=False, carry=None):
        """``x + y`` (or ``x - y``), plus the bit ``carry`` if given, after aligning their stages;
        registered every ``every`` levels.

        ``carry`` becomes the adder's carry-in, which a carry chain has anyway: it adds a bit
        without adding an adder.
        """
        self._check_carry(carry)
        lo, hi = (x.lo - y.hi, x.hi - y.lo) if subtract else (x.lo + y.lo, x.hi + y.hi)
        if carry is not None:
            lo, hi = lo + carry.lo, hi + carry.hi
        operands = [v for v in (x, y, carry) if v is not None]
        if all(v.is_const for v in operands):
            return self.const(lo)
        stage = max(v.stage for v in operands if not v.is_const)
        operands = [self.delay(v, stage) for v in operands]
        x, y = operands[:2]
        if self.dry:
            value = None
        else:
            value = x.value - y.value if subtract else x.value + y.value
            if carry is not None:
                value = value + operands[2].value
        self.stats["adders"] += 1
        self.stats["adder_bits"] += shape_for(lo, hi).width
        depth = max((v.depth for v in operands if not v.is_const), default=0) + 1
        return self._level(Timed(self._fit(value, lo, hi), lo, hi, stage, depth))

    @staticmethod
    def _check_carry(carry):
        if carry is not None and not (carry.lo >= 0 and carry.hi <= 1):
            raise ValueError(f"carry: expected a bit, found a value in [{carry.lo}, {carry.hi}]")

    @staticmethod
    def _is_bit(x):
        return not x.is_const and x.lo == 0 and x.hi == 1

    def popcount(self, bits):
        """The sum of the bits ``bits`` (:class:`Timed` in ``[0, 1]``) as a balanced tree of
        adders that each take one of the bits as their carry-in.

        A tree of ``k - 1`` two-input adders over ``k`` bits spends its first level adding single
        bits into 2-bit sums, which narrows nothing; here every adder adds two sums and a bit, so
        ``k // 2`` adders do it (about 15% fewer ECP5 LUT4-equivalents for 26 to 400 bits, and one
        adder level less).
        """
        bits = list(bits)
        if not bits:
            return self.const(0)

        def tree(start, count):
            if count == 1:
                return bits[start]
            if count == 2:
                return self.add(bits[start], bits[start + 1])
            left = (count - 1) // 2
            if left % 2 == 0 and count % 2:
                left -= 1  # two odd halves: an even one would need an adder without a carry-in
            return self.add(tree(start + 1, left), tree(start + 1 + left, count - 1 - left), carry=bits[start])

        return tree(0, len(bits))

    def sum(self, terms):
        """The sum of ``terms`` (a list of :class:`Timed`) as a balanced adder tree.

        Single bits are used as the adders' carry-ins (see :meth:`popcount`): as many as there are
        adders over the wider terms, and the rest are counted by a popcount that joins them.
        """
        terms = [t for t in terms if not (t.is_const and t.lo == 0)]
        if not terms:
            return self.const(0)
        constant = sum(t.lo for t in terms if t.is_const)
        terms = [t for t in terms if not t.is_const]
        bits = [t for t in terms if self._is_bit(t)]
        words = [t for t in terms if not self._is_bit(t)]
        if constant:
            words.append(self.const(constant))
        # A tree over n words has n - 1 adders, one carry-in each; bits beyond those are counted.
        carries = bits
        if len(bits) > max(len(words) - 1, 0):
            # With the count as one more word there is one more adder: len(words) carry-ins.
            counted = max(len(bits) - len(words), 1)
            words.append(self.popcount(bits[:counted]))
            carries = bits[counted:]
        while len(words) > 1:
            pairs = []
            for i in range(0, len(words) - 1, 2):
                pairs.append(self.add(words[i], words[i + 1], carry=carries.pop() if carries else None))
            words = pairs + words[len(pairs) * 2:]
        assert not carries
        return words[0]

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

    #: Bits of the compared value per LUT of a comparison chain (a LUT4 also takes the result
    #: of the bits below).
    CHAIN_BITS = 3

    def compare(self, x, op, constant, carry=None):
        """The bit ``x op constant`` for ``op`` in ``>=``, ``>``, ``<=``, ``<``, or
        ``(x + carry) op constant`` with a bit ``carry``; registered.

        Built as a chain of small comparisons, each of :data:`CHAIN_BITS` bits of ``x`` with
        the constant's and of the result of the bits below (one LUT4 each; ``carry`` enters at
        the bottom). Yosys builds ``x >= constant`` as a carry chain, which nextpnr places in
        13 to 17 LUT4 slots for 7 to 11 bits (26 to 34 with a carry) against 3 to 5 for the
        chain (``benchmarks/compare_cost.py``).
        """
        if op not in (">=", ">", "<=", "<"):
            raise ValueError(f"op: expected one of >=, >, <=, <, found {op!r}")
        self._check_carry(carry)
        x = self.register(x) if x.depth else x
        if carry is not None and not carry.is_const:
            stage = max(x.stage, carry.stage)
            x, carry = self.delay(x, stage), self.delay(carry, stage)
        self.stats["compare_bits"] += shape_for(x.lo, x.hi).width
        if self.dry:
            return self.register(Timed(None, 0, 1, x.stage, 0))
        # (x + carry) >= k, negated for <= and <.
        k = {">=": constant, ">": constant + 1, "<=": constant + 1, "<": constant}[op]
        return self.register(Timed(self._at_least(x.value, k, carry) ^ (op in ("<=", "<")), 0, 1, x.stage, 0))

    def _at_least(self, value, k, carry):
        """``value + carry >= k`` (``carry`` a :class:`Timed` bit or ``None``) as a chain from
        the lowest bits up: ``ge = (chunk > t) | ((chunk == t) & ge)`` over ``t``'s chunks."""
        width = len(value)
        unsigned_value = value.as_unsigned()
        if value.shape().signed:
            # Two's complement with the sign bit flipped is the value plus 2**(width-1), unsigned.
            unsigned_value = Cat(value[:-1], ~value[-1])
            k += 1 << (width - 1)
        if carry is None:
            t, ge = k, Const(1, 1)       # x >= k: (x > k) | (x == k)
        else:
            # x + c >= k: (x > k-1) | ((x == k-1) & c)
            t, ge = k - 1, carry.value if not carry.is_const else Const(carry.lo, 1)
        if t < 0:
            return Const(1, 1)
        if t >= 1 << width:
            return Const(0, 1)
        for lo in range(0, width, self.CHAIN_BITS):
            hi = min(lo + self.CHAIN_BITS, width)
            chunk, part = unsigned_value[lo:hi], (t >> lo) & ((1 << (hi - lo)) - 1)
            ge = (chunk > part) | ((chunk == part) & ge)
        return ge

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
