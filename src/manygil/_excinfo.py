"""A picklable summary of an exception, cheap to import inside every interpreter."""

from __future__ import annotations

__all__ = ("ExcInfo", "ExcTypeInfo", "rebuild_exception")


def rebuild_exception(cls: type[BaseException], args: tuple[object, ...], state: dict[str, object] | None) -> BaseException:
    """An exception pickled in another interpreter (see ``_worker._dump_error``):
    ``cls(*args)`` as pickle does, or, when its ``__init__`` does not take its ``args``
    back (``MyError(code, msg)`` that passes only ``msg`` on), made without calling
    ``__init__``, as ``copy`` makes objects; then its attributes.  So ``except MyError``
    catches it in the caller."""
    try:
        exc = cls(*args)
    except Exception:  # noqa: BLE001 - its __init__ wants other arguments
        exc = cls.__new__(cls, *args)  # BaseException.__new__ sets .args
    if state:
        exc.__dict__.update(state)
    return exc


class ExcTypeInfo:
    """The identity of an exception type that stayed in another interpreter."""

    def __init__(self, name: str, qualname: str, module: str) -> None:
        self.__name__ = name
        self.__qualname__ = qualname
        self.__module__ = module

    def __reduce__(self) -> tuple[object, ...]:
        return (type(self), (self.__name__, self.__qualname__, self.__module__))

    def __repr__(self) -> str:
        return f"ExcTypeInfo({self.__module__}.{self.__qualname__})"

    def __eq__(self, other: object) -> bool:
        return isinstance(other, ExcTypeInfo) and self.__reduce__() == other.__reduce__()

    def __hash__(self) -> int:
        return hash(self.__reduce__())


class ExcInfo:
    """A summary of an exception raised in another interpreter.

    Attributes:
        type: the exception type's ``__name__``, ``__qualname__`` and ``__module__``.
        msg: ``str()`` of the exception.
        formatted: ``"TypeName: msg"``, as the last line of a traceback shows it.
        errdisplay: the whole traceback, as it would have been printed there.
    """

    __slots__ = ("errdisplay", "formatted", "msg", "type")

    def __init__(self, type: ExcTypeInfo, msg: str, formatted: str, errdisplay: str = "") -> None:
        self.type = type
        self.msg = msg
        self.formatted = formatted
        self.errdisplay = errdisplay

    def __reduce__(self) -> tuple[object, ...]:
        return (type(self), (self.type, self.msg, self.formatted, self.errdisplay))

    def __repr__(self) -> str:
        return f"ExcInfo({self.formatted!r})"

    @classmethod
    def brief(cls, exc: BaseException) -> ExcInfo:
        """Summarise ``exc`` without its traceback (cheap: no import)."""
        tp = type(exc)
        msg = str(exc)
        formatted = f"{tp.__name__}: {msg}" if msg else tp.__name__
        return cls(ExcTypeInfo(tp.__name__, tp.__qualname__, tp.__module__), msg, formatted)

    @classmethod
    def from_exception(cls, exc: BaseException, *, skip: int = 0) -> ExcInfo:
        """Summarise ``exc``, leaving out the first ``skip`` frames of its traceback."""
        import traceback  # only when something failed: it is slow to import

        tb = exc.__traceback__
        for _ in range(skip):
            if tb is not None and tb.tb_next is not None:
                tb = tb.tb_next
        info = cls.brief(exc)
        info.errdisplay = "".join(traceback.format_exception(type(exc), exc, tb))
        return info
