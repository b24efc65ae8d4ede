"""The one check of a timeout argument, for every manygil wait (locks, events, queues).

As ``threading`` reads timeouts, with one difference on purpose:

    None, inf, > TIMEOUT_MAX   wait forever (None); threading raises OverflowError for the
                               last two, and a deadline that far off cannot be reached
    NaN                        ValueError (as threading.Lock.acquire; the other threading
                               waits would return at once or spin forever)
    negative                   ValueError, or "do not wait" (0.0) for the waits that
                               threading lets return at once (Event.wait, Semaphore.acquire)
    not a real number          TypeError

The native layer saturates its deadlines too, so an unchecked value cannot overflow one.
"""

from __future__ import annotations

import math
from _thread import TIMEOUT_MAX  # not threading: workers import this module

__all__ = ("TIMEOUT_MAX", "check_timeout")


def check_timeout(value: object, name: str = "timeout", *, negative_is_zero: bool = False) -> float | None:
    """``value`` as seconds to wait, or None to wait forever.

    Args:
        value: what the caller passed (None, an int or a float).
        name: the argument's name, for the error messages.
        negative_is_zero: a negative value means "do not wait" instead of an error.

    Raises:
        TypeError: ``value`` is not a real number.
        ValueError: ``value`` is NaN, or negative (unless ``negative_is_zero``).
    """
    if value is None:
        return None
    if isinstance(value, (str, bytes, bool)):
        raise TypeError(f"{name} must be a number of seconds or None, got {value!r}")
    try:
        seconds = float(value)  # type: ignore[arg-type]
    except OverflowError:  # an int too large for a float
        seconds = math.inf if value > 0 else -math.inf  # type: ignore[operator]
    except (TypeError, ValueError):
        raise TypeError(f"{name} must be a number of seconds or None, got {value!r}") from None
    if math.isnan(seconds):
        raise ValueError(f"{name} must be a number of seconds, got nan; pass None to wait forever")
    if seconds < 0:
        if negative_is_zero:
            return 0.0
        raise ValueError(f"{name} must be a non-negative number, got {value!r}")
    if seconds > TIMEOUT_MAX:
        return None
    return seconds
