"""ManagerMixin: named, process-global instances, one registry per class.

Hooks and runners find the same MessageHub or logger by name from anywhere;
these tests pin that contract, including when many threads ask for the same
new name at once.
"""

from __future__ import annotations

import sys
import threading
import warnings
from collections import OrderedDict
from collections.abc import Callable, Iterator
from concurrent.futures import ThreadPoolExecutor
from typing import Any

import pytest

from shmlog import MessageHub
from shmlog.api.manager import ManagerMixin
from shmlog.api.process import PROCESS


class Widget(ManagerMixin):
    created = 0
    created_lock = threading.Lock()

    def __init__(self, name: str = "", size: int = 1, work: int = 0) -> None:
        super().__init__(name)
        # Some pure-Python work widens the window in which an unlocked
        # check-then-create would let a second thread in.
        total = 0
        for i in range(work):
            total += i
        self.size = size
        with Widget.created_lock:
            Widget.created += 1


class Gadget(ManagerMixin):
    def __init__(self, name: str = "") -> None:
        super().__init__(name)


class SubWidget(Widget):
    pass


class Fragile(ManagerMixin):
    def __init__(self, name: str = "", fail: bool = False) -> None:
        super().__init__(name)
        if fail:
            raise RuntimeError("construction failed")


REGISTRIES = (ManagerMixin, Widget, Gadget, SubWidget, Fragile, MessageHub)


@pytest.fixture(autouse=True)
def _isolated_registries(monkeypatch: pytest.MonkeyPatch) -> Iterator[None]:
    """Registries are process-global: start empty, put everything back afterwards."""
    monkeypatch.setattr(PROCESS, "resolver", None)
    saved = {cls: OrderedDict(cls.__dict__["_instance_dict"]) for cls in REGISTRIES}
    for cls in REGISTRIES:
        cls._instance_dict.clear()
    Widget.created = 0
    yield
    for cls, registry in saved.items():
        cls._instance_dict.clear()
        cls._instance_dict.update(registry)


@pytest.fixture
def fast_thread_switching() -> Iterator[None]:
    previous = sys.getswitchinterval()
    sys.setswitchinterval(1e-6)
    yield
    sys.setswitchinterval(previous)


def test_get_instance_creates_once_then_returns_the_same_object() -> None:
    first = Widget.get_instance("a", size=3)
    assert isinstance(first, Widget)
    assert first.instance_name == "a"
    assert first.size == 3
    assert Widget.get_instance("a") is first
    assert Widget.created == 1


def test_different_names_are_different_instances() -> None:
    a = Widget.get_instance("a")
    b = Widget.get_instance("b")
    assert a is not b
    assert (a.instance_name, b.instance_name) == ("a", "b")


def test_check_instance_created() -> None:
    assert not Widget.check_instance_created("a")
    Widget.get_instance("a")
    assert Widget.check_instance_created("a")
    assert not Widget.check_instance_created("b")


def test_direct_construction_does_not_register() -> None:
    widget = Widget("loose")
    assert widget.instance_name == "loose"
    assert not Widget.check_instance_created("loose")
    assert Widget.get_instance("loose") is not widget


def test_current_instance_is_the_most_recently_created() -> None:
    a = Widget.get_instance("a")
    b = Widget.get_instance("b")
    assert Widget.get_current_instance() is b
    # Fetching an existing instance does not make it current.
    assert Widget.get_instance("a") is a
    assert Widget.get_current_instance() is b
    c = Widget.get_instance("c")
    assert Widget.get_current_instance() is c


def test_current_instance_without_any_is_an_error() -> None:
    with pytest.raises(RuntimeError, match=r"Widget.get_current_instance\(\)"):
        Widget.get_current_instance()


def test_message_hub_current_instance_creates_mmengine() -> None:
    hub = MessageHub.get_current_instance()
    assert isinstance(hub, MessageHub)
    assert hub.instance_name == "mmengine"
    assert MessageHub.check_instance_created("mmengine")
    assert MessageHub.get_current_instance() is hub
    task = MessageHub.get_instance("task")
    assert MessageHub.get_current_instance() is task
    assert list(MessageHub._instance_dict) == ["mmengine", "task"]


def test_message_hub_current_instance_is_an_existing_one_when_there_is_one() -> None:
    task = MessageHub.get_instance("task")
    assert MessageHub.get_current_instance() is task
    assert not MessageHub.check_instance_created("mmengine")


def test_kwargs_for_an_existing_instance_warn_and_are_ignored() -> None:
    widget = Widget.get_instance("a", size=2)
    with pytest.warns(UserWarning, match=r"'a' already exists.*\['size'\]"):
        again = Widget.get_instance("a", size=5)
    assert again is widget
    assert widget.size == 2
    assert Widget.created == 1


def test_no_warning_without_kwargs(recwarn: pytest.WarningsRecorder) -> None:
    Widget.get_instance("a", size=2)
    Widget.get_instance("a")
    assert len(recwarn) == 0


def test_each_subclass_has_its_own_registry() -> None:
    widget = Widget.get_instance("same")
    gadget = Gadget.get_instance("same")
    sub = SubWidget.get_instance("same")
    hub = MessageHub.get_instance("same")
    assert len({id(widget), id(gadget), id(sub), id(hub)}) == 4
    assert type(widget) is Widget and type(gadget) is Gadget
    assert type(sub) is SubWidget and type(hub) is MessageHub
    assert list(Widget._instance_dict.values()) == [widget]
    assert list(SubWidget._instance_dict.values()) == [sub]
    assert not ManagerMixin._instance_dict
    assert Gadget.get_current_instance() is gadget
    assert Widget.get_current_instance() is widget


def test_a_subclass_registry_is_not_its_parents() -> None:
    Widget.get_instance("only-widget")
    assert not SubWidget.check_instance_created("only-widget")
    with pytest.raises(RuntimeError):
        SubWidget.get_current_instance()


@pytest.mark.parametrize("name", ["", None, 3, b"a"])
def test_bad_names_are_refused(name: Any) -> None:
    with pytest.raises(TypeError, match="name"):
        Widget.get_instance(name)
    with pytest.raises(TypeError, match="name"):
        Widget(name)
    assert not Widget._instance_dict


def test_failed_construction_registers_nothing() -> None:
    with pytest.raises(RuntimeError, match="construction failed"):
        Fragile.get_instance("f", fail=True)
    assert not Fragile.check_instance_created("f")
    fragile = Fragile.get_instance("f")
    assert Fragile.get_current_instance() is fragile


def _run_together(count: int, target: Callable[[int], Any]) -> list[Any]:
    """Run ``target(i)`` in ``count`` threads released at the same moment."""
    barrier = threading.Barrier(count)

    def worker(index: int) -> Any:
        barrier.wait(timeout=60)
        return target(index)

    with ThreadPoolExecutor(max_workers=count) as pool:
        futures = [pool.submit(worker, i) for i in range(count)]
        return [future.result() for future in futures]  # re-raises a thread's error


@pytest.mark.usefixtures("fast_thread_switching")
def test_threads_creating_the_same_name_get_one_object() -> None:
    for round_ in range(5):
        name = f"shared-{round_}"
        with warnings.catch_warnings(record=True) as caught:
            warnings.simplefilter("always")
            results = _run_together(32, lambda _, name=name: Widget.get_instance(name, work=2_000))
        assert len({id(r) for r in results}) == 1
        # Exactly one thread created it; the 31 others were told their kwargs were ignored.
        assert sum("already exists" in str(w.message) for w in caught) == 31
        assert Widget.get_instance(name) is results[0]
    assert Widget.created == 5


@pytest.mark.usefixtures("fast_thread_switching")
def test_threads_creating_different_names_all_register() -> None:
    results = _run_together(32, lambda i: Widget.get_instance(f"w{i}", size=i))
    assert [w.size for w in results] == list(range(32))
    assert set(Widget._instance_dict) == {f"w{i}" for i in range(32)}
    assert all(Widget.get_instance(f"w{i}") is results[i] for i in range(32))


@pytest.mark.usefixtures("fast_thread_switching")
def test_threads_asking_for_the_current_hub_share_one_mmengine_hub() -> None:
    results = _run_together(32, lambda _: MessageHub.get_current_instance())
    assert len({id(r) for r in results}) == 1
    assert list(MessageHub._instance_dict) == ["mmengine"]


@pytest.mark.usefixtures("fast_thread_switching")
def test_threads_sharing_a_hub_by_name() -> None:
    def log(i: int) -> MessageHub:
        hub = MessageHub.get_instance("train")
        hub.update_info(f"worker{i}", i)
        return hub

    results = _run_together(16, log)
    assert len({id(r) for r in results}) == 1
    assert dict(results[0].runtime_info.items()) == {f"worker{i}": i for i in range(16)}


def test_a_manager_class_without_a_name_argument_is_refused_where_it_is_defined() -> None:
    from shmlog import ManagerMeta, ManagerMixin

    with pytest.raises(AssertionError, match="must take a `name` argument"):
        class NoName(ManagerMixin):
            def __init__(self, size: int = 0) -> None:
                super().__init__(name="fixed")

    with pytest.raises(ValueError, match="must take a `name` argument"):
        class NoNameEither(metaclass=ManagerMeta):
            def __init__(self, *args: object, **kwargs: object) -> None:
                pass

    class Named(metaclass=ManagerMeta):
        def __init__(self, name: str) -> None:
            self.name = name

    class Other(Named):
        pass

    assert Named._instance_dict == {} and Other._instance_dict is not Named._instance_dict
    assert type(ManagerMixin) is ManagerMeta
