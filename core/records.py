"""Frozen settings records whose methods are written once, not generated per class.

The settings (config, each package's settings, the provider records) are frozen records
with fields, defaults, `fields()` and `replace()`, as dataclasses are. A dataclass on
CPython 3.12 writes the source of `__init__`, `__repr__`, `__eq__`, `__hash__`,
`__setattr__` and `__delattr__` for each class and compiles each at import: for the
proxy's records that was about 55M of the 590M instructions a cold start takes
(docs/performance.md). Here one generic method of each serves every record: a record is
built once at start, so a loop over its fields costs nothing a request sees.

Type checkers read a `Record` subclass as a frozen dataclass (`dataclass_transform`):
constructor calls are checked field by field, assignments to a field refused.
"""

from __future__ import annotations

import inspect
from typing import Any, ClassVar, TypeVar, dataclass_transform

R = TypeVar("R", bound="Record")


class _Missing:
    def __repr__(self) -> str:
        return "MISSING"


MISSING: Any = _Missing()


class Field:
    """One field of a record: its name, default (or factory) and what the settings reader
    and the reference attach to it (`metadata`)."""

    __slots__ = ("default", "default_factory", "metadata", "name", "repr", "type")

    def __init__(
        self,
        default: Any = MISSING,
        default_factory: Any = MISSING,
        repr: bool = True,  # dataclasses' name for it
        metadata: dict[str, Any] | None = None,
    ) -> None:
        self.name = ""
        # The annotation as written (a string: the modules use postponed annotations).
        self.type: Any = None
        self.default = default
        self.default_factory = default_factory
        self.repr = repr
        self.metadata: dict[str, Any] = metadata or {}


def field(
    *,
    default: Any = MISSING,
    default_factory: Any = MISSING,
    repr: bool = True,
    metadata: dict[str, Any] | None = None,
) -> Any:
    """A field with a default, a default factory (a fresh value per record), hidden from
    repr (secrets), or with metadata: as `dataclasses.field`."""
    return Field(default, default_factory, repr, metadata)


class FrozenRecordError(AttributeError):
    """A field of a record was assigned after it was built."""


@dataclass_transform(frozen_default=True, field_specifiers=(field, Field))
class Record:
    """A frozen record: subclasses declare fields as annotated class attributes."""

    __record_fields__: ClassVar[tuple[Field, ...]] = ()

    def __init_subclass__(cls, **kwargs: Any) -> None:
        super().__init_subclass__(**kwargs)
        if "__post_init__" in cls.__dict__:
            # Out of dataclass habit a check would go there, and never run (nor on replace).
            raise TypeError(
                f"{cls.__name__}: a record runs no __post_init__; check the values where "
                "they are read (core/env.py)"
            )
        inherited = {item.name: item for item in cls.__record_fields__}
        for name, annotation in inspect.get_annotations(cls).items():
            if str(annotation).startswith(("ClassVar", "typing.ClassVar")):
                continue
            value = cls.__dict__.get(name, MISSING)
            item = value if isinstance(value, Field) else Field(default=value)
            item.name = name
            item.type = annotation
            if item.default is not MISSING and item.default_factory is not MISSING:
                raise ValueError(f"{cls.__name__}.{name}: a default or a factory, not both")
            if item.default is not MISSING and type(item.default).__hash__ is None:
                # One list, dict or set shared by every record, as dataclasses refuse too.
                raise ValueError(
                    f"{cls.__name__}.{name}: mutable default {type(item.default).__name__}; "
                    "use default_factory"
                )
            inherited[name] = item
            # The class keeps a plain default as its attribute, as a dataclass does.
            if item.default is MISSING:
                if name in cls.__dict__:
                    delattr(cls, name)
            else:
                setattr(cls, name, item.default)
        cls.__record_fields__ = tuple(inherited.values())

    def __init__(self, *args: Any, **given: Any) -> None:
        declared = self.__record_fields__
        if len(args) > len(declared):
            raise TypeError(f"{type(self).__name__}() takes {len(declared)} fields")
        for item, value in zip(declared, args, strict=False):
            if item.name in given:
                raise TypeError(f"{type(self).__name__}() got {item.name!r} twice")
            given[item.name] = value
        for item in declared:
            if item.name in given:
                value = given.pop(item.name)
            elif item.default is not MISSING:
                value = item.default
            elif item.default_factory is not MISSING:
                value = item.default_factory()
            else:
                raise TypeError(f"{type(self).__name__}() is missing {item.name!r}")
            object.__setattr__(self, item.name, value)
        if given:
            raise TypeError(f"{type(self).__name__}() has no field {next(iter(given))!r}")

    def __setattr__(self, name: str, value: Any) -> None:
        raise FrozenRecordError(f"cannot assign to field {name!r}")

    def __delattr__(self, name: str) -> None:
        raise FrozenRecordError(f"cannot delete field {name!r}")

    def _values(self) -> tuple[Any, ...]:
        return tuple(getattr(self, item.name) for item in self.__record_fields__)

    def __eq__(self, other: object) -> bool:
        if other.__class__ is not self.__class__:
            return NotImplemented
        return self._values() == other._values()  # type: ignore[attr-defined]

    def __hash__(self) -> int:
        return hash(self._values())

    def __repr__(self) -> str:
        shown = ", ".join(
            f"{item.name}={getattr(self, item.name)!r}"
            for item in self.__record_fields__
            if item.repr
        )
        return f"{type(self).__qualname__}({shown})"


def fields(record: Record | type[Record]) -> tuple[Field, ...]:
    """The fields of a record or record class, in declaration order."""
    return record.__record_fields__


def replace(record: R, **changes: Any) -> R:
    """A copy of `record` with some fields changed."""
    values = {item.name: getattr(record, item.name) for item in record.__record_fields__}
    values.update(changes)
    return type(record)(**values)
