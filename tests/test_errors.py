"""Bad input raises shmlog's clear errors, which are also AssertionErrors where MMEngine asserts.

Code written for MMEngine catches AssertionError (MMEngine checks with
``assert``); code written for shmlog catches TypeError, ValueError or KeyError.
Both must keep working, and the message still names the key, the value and
what was expected.
"""

from __future__ import annotations

from collections import OrderedDict

import numpy as np
import pytest

from shmlog import HistoryBuffer, LogProcessor, ManagerMixin, MessageHub
from shmlog.errors import InvalidKey, InvalidType, InvalidValue, NotAScalar


@pytest.mark.parametrize(
    ("cls", "bases"),
    [
        (InvalidType, (TypeError, AssertionError)),
        (InvalidValue, (ValueError, AssertionError)),
        (InvalidKey, (KeyError, AssertionError)),
        (NotAScalar, (TypeError, ValueError, AssertionError)),
    ],
)
def test_each_error_is_both_kinds(cls: type, bases: tuple[type, ...]) -> None:
    for base in bases:
        assert issubclass(cls, base)


def test_a_key_error_reads_as_its_sentence() -> None:
    assert str(InvalidKey("x: needs a 'value' entry")) == "x: needs a 'value' entry"


def test_history_buffer_lengths_that_differ() -> None:
    with pytest.raises(AssertionError, match="same length, got 2 and 1") as info:
        HistoryBuffer([1, 2], [1])
    assert isinstance(info.value, ValueError)


@pytest.mark.parametrize("many", [np.array([1.0, 2.0]), [1.0, 2.0]], ids=["array", "list"])
def test_update_with_more_than_one_number_is_a_type_error(many) -> None:
    buffer = HistoryBuffer()
    with pytest.raises(TypeError, match="expected an int, float"):
        buffer.update(many)
    assert len(buffer) == 0


def test_update_with_a_multi_element_array_is_also_a_value_error() -> None:
    with pytest.raises(ValueError, match=r"shape \(2,\) \(2 elements\)"):
        HistoryBuffer().update(np.array([1, 2]))


def test_message_hub_refuses_what_is_not_a_history_buffer() -> None:
    with pytest.raises(AssertionError, match=r"log_scalars\['a'\]: expected a HistoryBuffer, got int"):
        MessageHub("refuse", log_scalars=OrderedDict(a=1))


def test_message_hub_refuses_a_resumed_key_of_nothing() -> None:
    with pytest.raises(AssertionError, match=r"resumed_keys\['iters'\]: .* runtime_info \['iter'\]"):
        MessageHub("refuse", runtime_info=OrderedDict(iter=1), resumed_keys=OrderedDict(iters=False))
    hub = MessageHub("accept", runtime_info=OrderedDict(iter=1), resumed_keys=OrderedDict(iter=False))
    assert hub.state_dict()["runtime_info"] == OrderedDict()  # not resumed: not saved


def test_update_scalars_bad_entries_change_nothing() -> None:
    hub = MessageHub("entries")
    with pytest.raises(AssertionError, match=r"'bad' value: expected .* got list \[\]"):
        hub.update_scalars({"good": 1.0, "bad": []})
    with pytest.raises(KeyError) as info:
        hub.update_scalars({"good": 1.0, "bad": {"count": 1}})
    assert isinstance(info.value, AssertionError)
    assert str(info.value) == (
        "update_scalars['bad']: a dict value needs a 'value' entry, got keys ['count']"
    )
    assert "good" not in hub.log_scalars


def test_instance_names_must_be_strings() -> None:
    class Named(ManagerMixin):
        pass

    with pytest.raises(AssertionError, match="Named.get_instance name: expected a non-empty str, got 1"):
        Named.get_instance(name=1)
    with pytest.raises(TypeError, match="Named name: expected a non-empty str, got ''"):
        Named("")


@pytest.mark.parametrize(
    ("kwargs", "words"),
    [
        # The real problem is named even though 'method_name' is missing too.
        ({"by_epoch": False, "custom_cfg": [{"data_src": "loss", "window_size": "epoch"}]},
         "'epoch' needs by_epoch=True"),
        ({"custom_cfg": [{"data_src": "loss", "log_name": "l1"},
                         {"data_src": "loss", "log_name": "l1"}]},
         "log_name 'l1' (for data_src 'loss') is already produced by custom_cfg[0]"),
        ({"custom_cfg": [{"data_src": "loss"}, {"data_src": "loss"}]},
         "log_name 'loss'"),
        ({"custom_cfg": [{"data_src": "loss"}]}, "needs a 'method_name' key"),
        ({"custom_cfg": [{"method_name": "mean"}]}, "needs a 'data_src' key"),
        ({"custom_cfg": [{"data_src": ["loss"], "method_name": "mean"}]},
         "custom_cfg[0]['data_src']: expected a non-empty str, got list"),
        ({"window_size": 0}, "window_size: expected an int >= 1, got 0"),
    ],
)
def test_log_processor_config_errors(kwargs: dict, words: str) -> None:
    with pytest.raises(AssertionError) as info:
        LogProcessor(**kwargs)
    assert isinstance(info.value, (TypeError, ValueError))
    assert words in str(info.value)


def test_every_exception_shmlog_defines_is_in_errors_exported_and_documented() -> None:
    import ast
    import pathlib

    import shmlog
    from shmlog import errors

    package = pathlib.Path(shmlog.__file__).parent
    defined_elsewhere = [
        f"{path.relative_to(package.parent)}: {node.name}"
        for path in sorted(package.rglob("*.py")) if path.name != "errors.py"
        for node in ast.walk(ast.parse(path.read_text()))
        if isinstance(node, ast.ClassDef) and any(
            isinstance(b, ast.Name) and (b.id.endswith(("Error", "Exception")) or b.id in errors.__all__)
            for b in node.bases)
    ]
    assert defined_elsewhere == [], "exceptions defined outside shmlog/errors.py"
    api = (package.parent / "docs" / "api.md").read_text()
    for name in errors.__all__:
        cls = getattr(errors, name)
        assert issubclass(cls, Exception)
        assert getattr(shmlog, name) is cls, f"shmlog.{name} is not exported"
        assert f"`{name}`" in api, f"{name} is not listed in docs/api.md"


def test_process_config_reads_the_environment_and_names_a_malformed_variable() -> None:
    from shmlog.api.config import RECORD_RING_BYTES, Config

    config = Config.from_env({"SHMLOG_SESSION": "s1", "GROUP_RANK": "2", "LOCAL_WORLD_SIZE": "4",
                              "NNODES": "3"})
    assert config == Config(session="s1", shared_storage=False, node_rank=2,
                            local_world_size=4, record_ring_bytes=RECORD_RING_BYTES)
    assert Config.from_env({}) == Config("", True, 0, 1)
    assert Config.from_env({"NNODES": "3", "SHMLOG_SHARED_STORAGE": "1"}).shared_storage
    with pytest.raises(ValueError, match=r"LOCAL_WORLD_SIZE='0'.*integer >= 1"):
        Config.from_env({"LOCAL_WORLD_SIZE": "0"})
    with pytest.raises(ValueError, match=r"GROUP_RANK='x'"):
        Config.from_env({"GROUP_RANK": "x"})
    with pytest.raises(AttributeError):
        config.node_rank = 0  # frozen: passed around, never changed
