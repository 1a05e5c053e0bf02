"""Anti-replay window for transport counters (RFC 6479 bitmap ring).

A receiver accepts each 64-bit transport counter at most once, and only while
it is no more than ``COUNTER_WINDOW_SIZE`` behind the greatest counter seen so
far.  The bitmap is a ring of 128 words of 64 bits (8192 bits); one word is
kept as slack so that moving the head only ever clears whole words, which is
why the usable window is 8192 - 64 = 8128 counters (the kernel's
``counter_validate`` in ``receive.c`` and wireguard-go's ``replay`` package
use the same geometry).

Unlike the kernel, which stores counter + 1 internally so that 0 can mean
"nothing seen", this class stores wire counters directly and uses -1 for
"nothing seen".  The accepted set is identical.

Not thread-safe: the caller serialises calls per keypair (one receiver).
"""

from __future__ import annotations

from typing import Final

from wgpy.constants import COUNTER_WINDOW_SIZE, REJECT_AFTER_MESSAGES

__all__ = ["ReplayWindow"]

_WORD_SHIFT: Final = 6  # log2 of the word width
_WORD_MASK: Final = (1 << _WORD_SHIFT) - 1
_RING_WORDS: Final = 128  # 8192 bits in all
_RING_MASK: Final = _RING_WORDS - 1
_ZERO_RING: Final = (0,) * _RING_WORDS
_BITS: Final = tuple(1 << i for i in range(1 << _WORD_SHIFT))  # no shift per packet

# The ring must hold every counter from greatest - window to greatest.
assert (_RING_WORDS - 1) << _WORD_SHIFT == COUNTER_WINDOW_SIZE


class ReplayWindow:
    """RFC 6479 sliding window of width COUNTER_WINDOW_SIZE, as the kernel's counter.c.

    ``validate`` is a check-and-set: it must be called only after the packet
    authenticated, so that forged packets never move the window.
    """

    __slots__ = ("_greatest", "_ring")

    def __init__(self) -> None:
        self._ring: list[int] = list(_ZERO_RING)
        self._greatest = -1  # -1: no counter accepted yet

    def validate(self, counter: int, limit: int = REJECT_AFTER_MESSAGES) -> bool:
        """Accept ``counter`` once.

        Returns True if the counter is fresh (and marks it seen); False if it
        was seen already, is more than ``COUNTER_WINDOW_SIZE`` behind the
        greatest accepted counter, is negative, or is ``>= limit``.  A
        rejected counter leaves the window unchanged.
        """
        if counter >= limit or counter < 0:
            return False
        greatest = self._greatest
        if counter > greatest:
            # New head.  Bits above the old head in its own word are still
            # zero, so the new bit is necessarily fresh.
            index = counter >> _WORD_SHIFT
            if index == greatest >> _WORD_SHIFT:
                self._ring[index & _RING_MASK] |= _BITS[counter & _WORD_MASK]
            else:
                # Entering new words: zero the ones skipped (at most the whole
                # ring) and start the head word with just this bit.
                ring = self._ring
                current = greatest >> _WORD_SHIFT
                if index - current > _RING_WORDS:
                    ring[:] = _ZERO_RING
                else:
                    for i in range(current + 1, index):
                        ring[i & _RING_MASK] = 0
                ring[index & _RING_MASK] = _BITS[counter & _WORD_MASK]
            self._greatest = counter
            return True
        if counter < greatest - COUNTER_WINDOW_SIZE:
            return False  # too old: its word may already be reused
        ring = self._ring
        slot = (counter >> _WORD_SHIFT) & _RING_MASK
        bit = _BITS[counter & _WORD_MASK]
        word = ring[slot]
        if word & bit:
            return False  # replayed
        ring[slot] = word | bit
        return True

    def extend(self, last: int) -> None:
        """Accept every counter after the greatest up to ``last``, as calls
        of :meth:`validate` in increasing order would (each is fresh: it lies
        above the head).  The receive path defers a run of consecutive
        counters that authenticated to this one call; the caller has checked
        each against the limit.  Nothing happens when ``last`` is not above
        the greatest or nothing was accepted yet."""
        greatest = self._greatest
        if last <= greatest or greatest < 0:
            return
        ring = self._ring
        lo, hi = (greatest + 1) >> _WORD_SHIFT, last >> _WORD_SHIFT
        head = greatest >> _WORD_SHIFT
        # Only the newest _RING_WORDS words survive; older ones would be reused.
        for word in range(max(lo, hi - _RING_WORDS + 1), hi + 1):
            base = word << _WORD_SHIFT
            start = greatest + 1 - base if word == lo else 0
            end = last - base if word == hi else _WORD_MASK
            bits = ((1 << (end - start + 1)) - 1) << start
            if word == head:
                ring[word & _RING_MASK] |= bits
            else:
                ring[word & _RING_MASK] = bits
        self._greatest = last

    def reset(self) -> None:
        """Forget every counter, as for a fresh keypair."""
        self._ring[:] = _ZERO_RING
        self._greatest = -1

    @property
    def greatest(self) -> int | None:
        """The greatest counter accepted so far, or None if none was."""
        return self._greatest if self._greatest >= 0 else None
