"""A byte budget shared by the threads that decode frames: a counting semaphore in bytes.

Each decode asks for its estimated peak (``shared.imaging.estimate_decode_bytes``) before
it allocates anything and gives it back when done, so the frames of one invocation never
hold more decoded bytes at once than the function can spare, whatever their number.
A request larger than the whole budget can never be met and is refused at once.
"""

from __future__ import annotations

import contextlib
import threading
from collections.abc import Iterator

from shared.errors import ImageTooLargeForMemoryError

MIB = 1024 * 1024


class DecodeBudget:
    """``hold(n)`` waits until ``n`` bytes are free, keeps them for the block, then frees them."""

    def __init__(self, capacity: int) -> None:
        if capacity <= 0:
            raise ValueError(f"A decode budget needs a positive capacity; it is {capacity}.")
        self.capacity = capacity
        self._used = 0
        self._cond = threading.Condition()
        self.peak = 0  # the most bytes ever held at once (for tests and logs)

    @property
    def used(self) -> int:
        with self._cond:
            return self._used

    @contextlib.contextmanager
    def hold(self, nbytes: int, *, key: str | None = None) -> Iterator[None]:
        """Reserve ``nbytes`` for the block; raise ``ImageTooLargeForMemoryError`` if they can never fit.

        That refusal does not settle the input: it is about this function's memory, not the frame.
        """
        nbytes = max(0, nbytes)
        if nbytes > self.capacity:
            name = repr(key) if key else "The image"
            raise ImageTooLargeForMemoryError(
                f"{name} needs about {nbytes / MIB:,.0f} MiB to decode, more than the {self.capacity / MIB:,.0f} "
                "MiB this function can spend on decoding; send smaller frames or give the function more memory "
                "(its memory size, or FUNCTION_MEMORY_MB).", key=key, decode_bytes=nbytes, budget=self.capacity)
        with self._cond:
            self._cond.wait_for(lambda: self._used + nbytes <= self.capacity)
            self._used += nbytes
            self.peak = max(self.peak, self._used)
        try:
            yield
        finally:
            with self._cond:
                self._used -= nbytes
                self._cond.notify_all()
