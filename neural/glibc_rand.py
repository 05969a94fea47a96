"""glibc's rand() (the TYPE_3 additive feedback generator), so that code paths where
libfann draws random numbers (SARPROP's noise, shuffles) can be reproduced exactly."""

from __future__ import annotations


class GlibcRandom:
    def __init__(self, seed: int = 1) -> None:
        seed = seed & 0xFFFFFFFF or 1
        r = [0] * 34
        r[0] = seed if seed < 2**31 else seed - 2**32
        for i in range(1, 31):
            hi, lo = divmod(r[i - 1], 127773)
            word = 16807 * lo - 2836 * hi
            if word < 0:
                word += 2147483647
            r[i] = word
        for i in range(31, 34):
            r[i] = r[i - 31]
        self._state = r[:]  # r[0..33]
        self._state = [(x & 0xFFFFFFFF) for x in self._state]
        self._r = self._state
        # Discard the first 310 outputs, as glibc does.
        for _ in range(310):
            self._next()

    def _next(self) -> int:
        r = self._r
        value = (r[-31] + r[-3]) & 0xFFFFFFFF
        r.append(value)
        if len(r) > 64:
            del r[:-34]
        return value >> 1

    def rand(self) -> int:
        return self._next()
