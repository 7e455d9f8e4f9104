"""Keys and hub names: what a MessageHub accepts, refused the same way in a session or not.

A session stores ``hub name + '\\x1f' + key`` in 256 bytes of UTF-8, so a key
is checked before anything is stored: its type, the separator, its length.
Every test runs the same calls on a process-local hub and on a hub inside a
session and expects the same exception with the same message from both.
"""

from __future__ import annotations

import importlib.util
from collections import OrderedDict
from collections.abc import Callable, Iterator
from typing import Any

import pytest

import shmlog
from shmlog import MessageHub
from shmlog.api.process import PROCESS
from shmlog.shm.names import KEY_MAX_BYTES
from shmlog.wire import SEPARATOR

pytestmark = pytest.mark.timeout(60)

MODES = ["local", "session"]


@pytest.fixture(autouse=True)
def _own_hubs() -> Iterator[None]:
    """Each test starts with no hubs and leaves the registry as it found it."""
    saved = OrderedDict(MessageHub._instance_dict)
    MessageHub._instance_dict.clear()
    yield
    MessageHub._instance_dict.clear()
    MessageHub._instance_dict.update(saved)


@pytest.fixture(params=MODES)
def mode(request: pytest.FixtureRequest, name: str, monkeypatch: pytest.MonkeyPatch) -> Iterator[str]:
    """Run the test outside any session, then inside a fresh one."""
    if request.param == "local":
        monkeypatch.setattr(PROCESS, "resolver", None)
        yield "local"
        return
    with shmlog.init(name, log_writer="none"):
        yield "session"


def _hub(label: str) -> MessageHub:
    return MessageHub.get_instance(f"keys-{label}")


def _refusal(call: Callable[[], Any]) -> tuple[type, str]:
    with pytest.raises((TypeError, ValueError)) as info:
        call()
    return type(info.value), str(info.value)


class MetaLikeTensor:
    """A tensor that has no data, as torch's meta tensors: ``item()`` raises."""

    is_meta = True
    shape = ()

    def numel(self) -> int:
        return 1

    def item(self) -> float:
        raise RuntimeError("Tensor.item() cannot be called on meta tensors")

    def __repr__(self) -> str:
        return "tensor(..., device='meta', size=())"


def _meta_tensors() -> list[Any]:
    tensors: list[Any] = [pytest.param(MetaLikeTensor(), id="meta-like")]
    has_torch = importlib.util.find_spec("torch") is not None
    mark = pytest.mark.skipif(not has_torch, reason="torch is not installed")

    def torch_meta() -> Any:
        import torch

        return torch.empty((), device="meta")

    tensors.append(pytest.param(torch_meta, id="torch-meta", marks=[mark, pytest.mark.needs_torch]))
    return tensors


@pytest.mark.parametrize(
    "bad",
    [pytest.param(3, id="int-key"), pytest.param("x" * 10_000, id="10kB-key")],
)
def test_update_scalars_with_one_bad_key_applies_nothing(mode: str, bad: Any) -> None:
    """A batch with one int key or one 10 kB key is refused whole, in a session or not."""
    hub = _hub(f"batch-{mode}")
    hub.update_scalar("kept", 1.0)
    with pytest.raises((TypeError, ValueError), match=r"MessageHub 'keys-batch-\w+' key"):
        hub.update_scalars({"good": 1.0, "other": {"value": 2.0, "count": 2}, bad: 3.0})
    assert list(hub.log_scalars) == ["kept"]
    assert hub.get_scalar("kept").totals().updates == 1
    with pytest.raises((TypeError, ValueError), match=r"MessageHub 'keys-batch-\w+' key"):
        hub.update_info_dict({"epoch": 1, bad: 2})
    assert dict(hub.runtime_info) == {}
    assert "good" not in hub._resumed_keys and "epoch" not in hub._resumed_keys


def _errors(hub: MessageHub, meta: Any) -> dict[str, tuple[type, str]]:
    long_key = "loss/" + "x" * 10_000
    return {
        "int scalar": _refusal(lambda: hub.update_scalar(3, 1.0)),
        "int info": _refusal(lambda: hub.update_info(3, 1)),
        "int get": _refusal(lambda: hub.get_info(3)),
        "meta": _refusal(lambda: hub.update_scalar("train/loss", meta)),
        "long scalar": _refusal(lambda: hub.update_scalar(long_key, 1.0)),
        "long info": _refusal(lambda: hub.update_info(long_key, 1)),
    }


@pytest.mark.parametrize("meta", _meta_tensors())
def test_bad_keys_and_meta_tensors_get_errors_naming_the_key(
    name: str, monkeypatch: pytest.MonkeyPatch, meta: Any
) -> None:
    """int key, meta tensor, 10 kB key: the same short TypeError/ValueError in both modes."""
    if callable(meta) and not hasattr(meta, "numel"):
        meta = meta()
    with monkeypatch.context() as local_mode:
        local_mode.setattr(PROCESS, "resolver", None)
        local = _errors(MessageHub(name="keys-errors"), meta)
    with shmlog.init(name, log_writer="none"):
        hub = MessageHub.get_instance("keys-errors")
        shared = _errors(hub, meta)
        assert list(hub.log_scalars) == [] and dict(hub.runtime_info) == {}
    assert shared == local

    for call in ("int scalar", "int info", "int get"):
        kind, message = local[call]
        assert issubclass(kind, TypeError)
        assert message == "MessageHub 'keys-errors' key 3: expected a str, got int"
    kind, message = local["meta"]
    assert issubclass(kind, ValueError)
    assert message.startswith("'train/loss' value: expected an int, float, numpy scalar")
    assert "meta" in message
    for call in ("long scalar", "long info"):
        kind, message = local[call]
        assert issubclass(kind, ValueError)
        assert len(message) < 300, message
        assert SEPARATOR not in message and "\\x1f" not in message
        assert "MessageHub 'keys-errors' key 'loss/xxxx" in message
        assert "(10005 characters)" in message
        room = KEY_MAX_BYTES - len(SEPARATOR) - len("keys-errors")
        assert f"takes 10005 bytes in UTF-8; expected at most {room}" in message


def test_longest_key_is_the_documented_limit(mode: str) -> None:
    """Hub name + separator + key may take exactly 256 bytes of UTF-8, not one more."""
    hub = _hub(f"limit-{mode}")
    room = KEY_MAX_BYTES - len(SEPARATOR) - len(hub.instance_name.encode())
    longest = "é" * (room // 2) + "k" * (room % 2)
    assert len(longest.encode()) == room
    hub.update_scalar(longest, 1.0)
    hub.update_info(longest, "v")
    assert hub.get_scalar(longest).current() == 1.0 and hub.get_info(longest) == "v"
    with pytest.raises(ValueError, match=f"expected at most {room} "):
        hub.update_scalar(longest + "k", 1.0)


def test_separator_in_hub_names_and_keys_is_refused(mode: str) -> None:
    """Hub 'h' key 'x\\x1fy' would read the rings of hub 'h\\x1fx' key 'y': both are refused."""
    hub = _hub(f"sep-{mode}")
    for call in (
        lambda: hub.update_scalar("x\x1fy", 1.0),
        lambda: hub.update_scalars({"x\x1fy": 1.0}),
        lambda: hub.update_info("x\x1fy", 1),
        lambda: hub.get_scalar("x\x1fy"),
    ):
        kind, message = _refusal(call)
        assert issubclass(kind, ValueError)
        assert message == (
            f"MessageHub {hub.instance_name!r} key 'x\\x1fy': contains '\\x1f', the separator "
            f"shmlog puts between hub names and keys; expected a key without it"
        )
    kind, message = _refusal(lambda: MessageHub.get_instance(f"{hub.instance_name}\x1fx"))
    assert issubclass(kind, ValueError)
    assert "MessageHub name 'keys-sep-" in message and "contains '\\x1f'" in message
    assert not MessageHub.check_instance_created(f"{hub.instance_name}\x1fx")
    with pytest.raises(ValueError, match="contains"):
        shmlog.init(hub="a\x1fb")
    assert list(hub.log_scalars) == [] and dict(hub.runtime_info) == {}
