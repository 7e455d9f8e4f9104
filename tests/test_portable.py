"""HistoryBuffers in checkpoints: loadable by MMEngine without shmlog, and MMEngine's loadable here."""

from __future__ import annotations

import copy
import importlib.util
import pickle
import subprocess
import sys
import textwrap
import types
from pathlib import Path

import numpy as np
import pytest

from shmlog import HistoryBuffer, MessageHub
from shmlog.stats.portable import MMENGINE_MODULE, TOTALS_ATTR


class ForeignBuffer:
    """Stands in for MMEngine's HistoryBuffer: restores its state by updating ``__dict__``."""

    def __setstate__(self, state: dict) -> None:
        state.pop("statistics_methods", None)
        self.__dict__.update(state)


@pytest.fixture
def foreign(monkeypatch: pytest.MonkeyPatch) -> type:
    """A process that uses "MMEngine": its history_buffer module is imported."""
    module = types.ModuleType(MMENGINE_MODULE)
    ForeignBuffer.__module__ = MMENGINE_MODULE
    ForeignBuffer.__qualname__ = ForeignBuffer.__name__ = "HistoryBuffer"
    module.HistoryBuffer = ForeignBuffer
    # pickle imports the module by name, which imports its packages first:
    # where MMEngine is not installed they are stood in for too.
    parts = MMENGINE_MODULE.split(".")
    for depth in range(1, len(parts)):
        package = ".".join(parts[:depth])
        if package not in sys.modules and importlib.util.find_spec(package) is None:
            stand_in = types.ModuleType(package)
            stand_in.__path__ = []  # a package, so that its submodules import
            monkeypatch.setitem(sys.modules, package, stand_in)
        elif package not in sys.modules:
            break  # the real package: importing it finds the real submodules
    monkeypatch.setitem(sys.modules, MMENGINE_MODULE, module)
    return ForeignBuffer


@pytest.mark.timeout(60)
def test_without_mmengine_a_buffer_pickles_as_itself() -> None:
    code = ("import pickle, sys; from shmlog import HistoryBuffer; "
            "b = pickle.loads(pickle.dumps(HistoryBuffer([1.0, 2.0], [1, 1], max_length=5))); "
            "print(type(b).__module__, b.data[0].tolist(), b.max_length, 'mmengine' in sys.modules)")
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True,
                         timeout=60, check=True).stdout
    assert out.strip() == "shmlog.stats.history_buffer [1.0, 2.0] 5 False"


def test_with_mmengine_a_buffer_pickles_as_mmengines(foreign: type) -> None:
    buffer = HistoryBuffer([1.0, 2.0, 4.0], [1, 1, 2], max_length=8)
    for protocol in (1, 2, pickle.HIGHEST_PROTOCOL):
        loaded = pickle.loads(pickle.dumps(buffer, protocol=protocol))
        assert type(loaded) is foreign
        assert loaded.max_length == 8
        assert loaded._log_history.tolist() == [1.0, 2.0, 4.0]
        assert loaded._count_history.tolist() == [1.0, 1.0, 2.0]
        assert not hasattr(loaded, TOTALS_ATTR)  # nothing dropped: the records say it all
    # Copies stay shmlog's.
    assert type(copy.deepcopy(buffer)) is HistoryBuffer
    assert type(copy.copy(buffer)) is HistoryBuffer


def test_totals_of_dropped_records_travel_and_come_back(foreign: type) -> None:
    buffer = HistoryBuffer(max_length=3)
    for value in (10.0, 20.0, 1.0, 2.0, 3.0):
        buffer.update(value)
    loaded = pickle.loads(pickle.dumps(buffer, protocol=2))
    assert loaded._log_history.tolist() == [1.0, 2.0, 3.0]
    back = HistoryBuffer.adopt(loaded)
    assert back is not None and back.totals().updates == 5
    assert back.mean() == 36.0 / 5 and back.max() == 20.0 and back.mean(3) == 2.0
    # MMEngine appended to it since: the saved totals no longer describe it.
    loaded._log_history = np.append(loaded._log_history, 4.0)[-3:]
    loaded._count_history = np.append(loaded._count_history, 1.0)[-3:]
    changed = HistoryBuffer.adopt(loaded)
    assert changed.totals().updates == 3 and changed.mean() == 3.0


def test_adopt_refuses_what_is_no_history_buffer() -> None:
    assert HistoryBuffer.adopt(object()) is None
    assert HistoryBuffer.adopt({"a": 1}) is None
    mine = HistoryBuffer([1.0], [1])
    assert HistoryBuffer.adopt(mine) is mine


def test_load_state_dict_takes_mmengines_buffers_and_warns_about_others(
    foreign: type, capsys: pytest.CaptureFixture[str]
) -> None:
    saved = ForeignBuffer()
    saved.__setstate__({"max_length": 100, "_log_history": np.array([1, 2, 3]),
                        "_count_history": np.array([1, 1, 1])})
    hub = MessageHub("adopts")
    hub.load_state_dict({"log_scalars": {"train/loss": saved, "bad": [1]},
                         "runtime_info": {"iter": 3},
                         "resumed_keys": {"train/loss": True, "iter": True}})
    assert hub.get_scalar("train/loss").data[0].tolist() == [1.0, 2.0, 3.0]
    hub.update_scalar("train/loss", 4.0)
    assert hub.get_scalar("train/loss").totals().updates == 4
    assert "log_scalars['bad'] is a builtins.list, not a HistoryBuffer" in capsys.readouterr().out


def test_a_state_in_mmengines_layout_unpickles_into_shmlogs_class() -> None:
    """What a checkpoint holds when MMEngine's module name means shmlog's class."""
    buffer = HistoryBuffer.__new__(HistoryBuffer)
    buffer.__setstate__({"max_length": 4, "_log_history": np.array([[1, 2], [3, 4]]),
                         "_count_history": np.ones((2, 2)), "statistics_methods": {}})
    assert buffer.data[0].tolist() == [1.0, 2.0, 3.0, 4.0] and buffer.max_length == 4
    with pytest.raises(ValueError, match="expected shmlog's or MMEngine's layout"):
        HistoryBuffer.__new__(HistoryBuffer).__setstate__({"x": 1})


LOAD_WITHOUT_SHMLOG = """
import pickle, sys
sys.modules["shmlog"] = None  # importing shmlog now fails
state = pickle.load(open(sys.argv[1], "rb"))
buffer = state["log_scalars"]["train/loss"]
print(type(buffer).__module__, buffer.mean(), buffer.mean(2), len(buffer._log_history))
"""


@pytest.mark.timeout(120)
@pytest.mark.needs_torch
@pytest.mark.skipif(importlib.util.find_spec("mmengine") is None, reason="needs mmengine")
def test_a_hub_state_saved_with_mmengine_loads_where_shmlog_is_not(tmp_path: Path) -> None:
    code = textwrap.dedent(f"""
        import pickle, sys
        import mmengine.logging  # a process that uses MMEngine
        from shmlog import MessageHub
        hub = MessageHub("saved")
        for v in (1.0, 2.0, 3.0, 6.0):
            hub.update_scalar("train/loss", v)
        pickle.dump(hub.state_dict(), open({str(tmp_path / 'state.pkl')!r}, "wb"), protocol=2)
    """)
    subprocess.run([sys.executable, "-c", code], check=True, timeout=100)
    done = subprocess.run([sys.executable, "-c", LOAD_WITHOUT_SHMLOG, str(tmp_path / "state.pkl")],
                          capture_output=True, text=True, timeout=100)
    assert done.returncode == 0, done.stderr
    assert done.stdout.split() == ["mmengine.logging.history_buffer", "3.0", "4.5", "4"]


def test_statistics_registered_with_mmengines_class_are_found(foreign: type) -> None:
    def spread(self, window_size=None):
        values = self._log_history if window_size is None else self._log_history[-window_size:]
        return values.max() - values.min()

    foreign._statistics_methods = {"spread": spread}
    buffer = HistoryBuffer([1.0, 5.0, 2.0], [1, 1, 1])
    assert buffer.statistics("spread") == 4.0 and buffer.statistics("spread", 2) == 3.0
    with pytest.raises(KeyError, match="'nothing' is not a registered HistoryBuffer statistic"):
        buffer.statistics("nothing")


# Saves a hub's state as the Runner does, then loads it with weights_only=True
# and the allow-list docs/mmengine.md gives.
WEIGHTS_ONLY = """
import copyreg, os, sys, numpy, torch
import mmengine.logging.history_buffer as mmengine_buffer
from shmlog import MessageHub
hub = MessageHub.get_instance('ck')
for value in (1.0, 2.0, 3.0):
    hub.update_scalar('train/loss', value)
path = os.path.join(sys.argv[1], 'ck.pth')
torch.save({'message_hub': hub.state_dict()}, path)
print(sorted(torch.serialization.get_unsafe_globals_in_checkpoint(path)))
allowed = [mmengine_buffer.HistoryBuffer, numpy.ndarray, numpy.dtype,
           type(numpy.dtype('float64')), numpy.core.multiarray._reconstruct,
           copyreg._reconstructor, object]
with torch.serialization.safe_globals(allowed):
    state = torch.load(path, weights_only=True)['message_hub']
print(type(state['log_scalars']['train/loss']).__module__,
      state['log_scalars']['train/loss']._log_history.tolist())
"""


@pytest.mark.needs_torch
@pytest.mark.timeout(120)
@pytest.mark.skipif(not (importlib.util.find_spec("torch") and importlib.util.find_spec("mmengine")),
                    reason="needs torch and mmengine")
def test_a_checkpoint_loads_with_weights_only_and_the_documented_allow_list(tmp_path: Path) -> None:
    done = subprocess.run([sys.executable, "-W", "ignore", "-c", WEIGHTS_ONLY, str(tmp_path)],
                          capture_output=True, text=True, timeout=110, check=False)
    assert done.returncode == 0, done.stderr
    listed, loaded = done.stdout.splitlines()[-2:]
    # What MMEngine's own HistoryBuffer needs, and the two that shmlog's pickling adds.
    assert "'copyreg._reconstructor'" in listed and "'builtins.object'" in listed
    assert loaded == "mmengine.logging.history_buffer [1.0, 2.0, 3.0]"
