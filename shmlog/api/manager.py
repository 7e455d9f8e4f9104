"""Named, process-global instances (MMEngine's ``ManagerMixin`` and ``ManagerMeta`` contract).

Each subclass keeps its own registry, so ``MessageHub.get_instance('a')`` and
``MMLogger.get_instance('a')`` never collide.  One re-entrant lock (the
process's registry lock, ``shmlog.api.process``) serialises creation: two
threads asking for the same new name get the same object.
"""

from __future__ import annotations

import inspect
import warnings
from collections import OrderedDict
from typing import TYPE_CHECKING, Any, ClassVar

from ..errors import InvalidType, InvalidValue
from .process import PROCESS

if TYPE_CHECKING:  # typing.Self is 3.11+; annotations are never evaluated
    from typing import Self


class ManagerMeta(type):
    """The metaclass of named, process-global classes (MMEngine's ``ManagerMeta``).

    Each class it makes gets a registry of its own, and a class whose
    ``__init__`` does not take a ``name`` argument is refused where it is
    defined (an error that is both ValueError and AssertionError, as MMEngine
    raises AssertionError), since ``get_instance`` passes ``name`` to it.
    """

    def __init__(cls, *args: Any) -> None:
        cls._instance_dict = OrderedDict()
        arguments = inspect.getfullargspec(cls).args
        if "name" not in arguments:
            raise InvalidValue(
                f"{cls.__module__}.{cls.__qualname__}.__init__ must take a `name` argument "
                f"(its positional or keyword arguments are {arguments}): get_instance "
                f"passes the instance's name to it"
            )
        super().__init__(*args)


class ManagerMixin(metaclass=ManagerMeta):
    """Base class for objects reachable anywhere by name.

    Subclasses must accept ``name`` as an argument of ``__init__`` (checked
    when the subclass is defined, by :class:`ManagerMeta`) and pass it on to
    ``ManagerMixin.__init__``.
    """

    _instance_dict: ClassVar[OrderedDict[str, ManagerMixin]] = OrderedDict()

    def __init_subclass__(cls, **kwargs: Any) -> None:
        super().__init_subclass__(**kwargs)
        # A registry per class: subclasses never see each other's instances.
        cls._instance_dict = OrderedDict()

    def __init__(self, name: str = "", **kwargs: Any) -> None:
        if not isinstance(name, str) or not name:
            raise InvalidType(
                f"{type(self).__name__} name: expected a non-empty str, got {name!r}"
            )
        self._instance_name = name

    @classmethod
    def get_instance(cls, name: str, **kwargs: Any) -> Self:
        """Return the instance called ``name``, creating it on first use.

        Keyword arguments only apply when the instance is created; passing
        them for an existing instance warns, because they would be ignored.
        """
        if not isinstance(name, str) or not name:
            raise InvalidType(
                f"{cls.__name__}.get_instance name: expected a non-empty str, got {name!r}"
            )
        with PROCESS.registry_lock:
            registry = cls._instance_dict
            if name not in registry:
                registry[name] = cls(name=name, **kwargs)
            elif kwargs:
                warnings.warn(
                    f"{cls.__name__} instance {name!r} already exists; the arguments "
                    f"{sorted(kwargs)} given to get_instance are ignored",
                    stacklevel=2,
                )
            return registry[name]  # type: ignore[return-value]

    @classmethod
    def get_current_instance(cls) -> Self:
        """Return the most recently created instance."""
        with PROCESS.registry_lock:
            if not cls._instance_dict:
                raise RuntimeError(
                    f"{cls.__name__}.get_current_instance() needs an instance: call "
                    f"{cls.__name__}.get_instance(name) at least once first"
                )
            return next(reversed(cls._instance_dict.values()))  # type: ignore[return-value]

    @classmethod
    def instances(cls) -> OrderedDict[str, Self]:
        """A copy of this class's registry: name -> instance, oldest first."""
        with PROCESS.registry_lock:
            return OrderedDict(cls._instance_dict)  # type: ignore[arg-type]

    @classmethod
    def check_instance_created(cls, name: str) -> bool:
        """Whether an instance called ``name`` exists."""
        return name in cls._instance_dict

    @property
    def instance_name(self) -> str:
        """The name this instance was registered under."""
        return self._instance_name
