"""shmlog's DataLoader integration with real torch DataLoaders.

Every test opens its own session, so the per-writer breakdown and ring counts
it checks are its own.  Datasets and worker_init_fns live in
``_dataloader_data`` (spawn and forkserver workers import them by module).
"""

from __future__ import annotations

import gc
import os
import pickle
import subprocess
import sys
import uuid
import warnings

import pytest

torch = pytest.importorskip("torch")

from _dataloader_data import MarkWorker, SlowCollate, Squares, Stream, marks
from torch.utils.data import DataLoader

import shmlog
from shmlog import MessageHub
from shmlog.api.process import PROCESS
from shmlog.wire import SEPARATOR

pytestmark = [pytest.mark.timeout(120), pytest.mark.needs_torch]

TESTS_DIR = os.path.dirname(os.path.abspath(__file__))
METHODS = ["fork", "spawn", "forkserver"]
KEY = "train/worker_data_time"
DELAY = 0.002  # seconds per item: every recorded batch of 2 takes at least 2 * DELAY
SQUARES = [float(i * i) for i in range(8)]


@pytest.fixture(autouse=True)
def _worker_environment(monkeypatch: pytest.MonkeyPatch) -> None:
    # pytest puts tests/ on sys.path of this process only; spawned workers
    # import _dataloader_data through PYTHONPATH.
    path = os.environ.get("PYTHONPATH")
    monkeypatch.setenv("PYTHONPATH", TESTS_DIR + (os.pathsep + path if path else ""))
    for var in ("RANK", "LOCAL_RANK", "WORLD_SIZE", "SHMLOG_WORKER_ID", "SHMLOG_SESSION"):
        monkeypatch.delenv(var, raising=False)
    # "Warn once" is per process; each test starts with nothing warned.
    monkeypatch.setattr(PROCESS, "warned", set())


@pytest.fixture
def name() -> str:
    return f"dl-{uuid.uuid4().hex[:12]}"


@pytest.fixture
def hub() -> str:
    # Hubs are process-global objects; a fresh name keeps tests independent
    # outside sessions too.
    return f"hub-{uuid.uuid4().hex[:12]}"


def squares_loader(method: str | None = "fork", **kwargs) -> DataLoader:
    options = {"batch_size": 2, "num_workers": 2}
    options.update(kwargs)
    if options["num_workers"] > 0 and method is not None:
        options["multiprocessing_context"] = method
    return DataLoader(Squares(8, DELAY), **options)


def values_of(batches: list) -> list[float]:
    return sorted(torch.cat(batches).tolist())


def updates_by_writer(hub: str, key: str = KEY) -> dict[str, int]:
    buffer = MessageHub.get_instance(hub).get_scalar(key)
    return {label: b.totals().updates for label, b in buffer.per_writer().items()}


def assert_times_at_least(hub: str, minimum: float, key: str = KEY) -> None:
    buffer = MessageHub.get_instance(hub).get_scalar(key)
    for label, part in buffer.per_writer().items():
        values, _ = part.data
        assert len(values) > 0, label
        assert values.min() >= minimum, (label, values)
    assert buffer.totals().minimum >= minimum


def rings_of(session: shmlog.Session, hub: str, key: str = KEY) -> int:
    return len(session.shared.readers(hub + SEPARATOR + key))


def shutdown(loader: DataLoader) -> None:
    """Stop a persistent loader's workers (they are only stopped when its iterator dies)."""
    loader._iterator = None
    gc.collect()


# -- start methods ---------------------------------------------------------------------------


@pytest.mark.parametrize("method", METHODS)
def test_each_start_method_records_per_worker_data_time(
    method: str, name: str, hub: str, tmp_path
) -> None:
    with shmlog.init(name) as session:
        loader = squares_loader(method, worker_init_fn=MarkWorker(str(tmp_path), hub))
        assert shmlog.track_data_time(loader, hub=hub) is loader
        assert values_of(list(loader)) == SQUARES

        # 4 batches, dealt round-robin: exactly 2 built by each worker.
        assert updates_by_writer(hub) == {"worker0": 2, "worker1": 2}
        assert_times_at_least(hub, 2 * DELAY)
        assert rings_of(session, hub) == 2

        # The user's worker_init_fn ran once per worker, already labelled.
        assert [(w, label) for w, _pid, label in marks(str(tmp_path))] == [
            (0, "worker0"),
            (1, "worker1"),
        ]
        assert updates_by_writer(hub, "init/mark") == {"worker0": 1, "worker1": 1}


def test_forkserver_started_in_an_earlier_session_sends_workers_to_this_one(
    hub: str, tmp_path
) -> None:
    """A forkserver keeps the environment it started with; workers still find the session."""
    from multiprocessing import forkserver

    forkserver._forkserver._stop()
    first, second = (f"dl-{uuid.uuid4().hex[:12]}" for _ in range(2))
    with shmlog.init(first):  # the forkserver starts here, with SHMLOG_SESSION=first
        loader = shmlog.track_data_time(squares_loader("forkserver"), hub=hub)
        assert values_of(list(loader)) == SQUARES
        assert updates_by_writer(hub) == {"worker0": 2, "worker1": 2}

    with shmlog.init(second):  # ... and still runs, with the closed session's name
        loader = shmlog.track_data_time(
            squares_loader("forkserver", worker_init_fn=MarkWorker(str(tmp_path), hub)),
            hub=hub,
        )
        assert values_of(list(loader)) == SQUARES
        assert updates_by_writer(hub) == {"worker0": 2, "worker1": 2}
        assert [label for _w, _pid, label in marks(str(tmp_path))] == ["worker0", "worker1"]

    # Outside any session the stale name must not send workers anywhere.
    loader = shmlog.track_data_time(squares_loader("forkserver"), hub=hub)
    with pytest.warns(UserWarning, match="no shmlog session"):
        assert values_of(list(loader)) == SQUARES


def test_rank_labels_and_mode_key(name: str, hub: str, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("RANK", "0")
    with shmlog.init(name):
        loader = shmlog.track_data_time(squares_loader(), mode="val", hub=hub)
        assert values_of(list(loader)) == SQUARES
        assert updates_by_writer(hub, "val/worker_data_time") == {"rank0/worker0": 2, "rank0/worker1": 2}
        assert KEY not in MessageHub.get_instance(hub).log_scalars


def test_collate_time_is_counted(name: str, hub: str) -> None:
    collate = 0.01
    with shmlog.init(name):
        loader = shmlog.track_data_time(
            squares_loader(collate_fn=SlowCollate(collate)), hub=MessageHub.get_instance(hub)
        )
        assert values_of(list(loader)) == SQUARES
        assert updates_by_writer(hub) == {"worker0": 2, "worker1": 2}
        assert_times_at_least(hub, 2 * DELAY + collate)


def test_iterable_dataset_counts_only_real_batches(name: str, hub: str) -> None:
    """The StopIteration that ends each worker's stream is not a batch."""
    with shmlog.init(name):
        loader = DataLoader(Stream(10, DELAY), batch_size=2, num_workers=2,
                            multiprocessing_context="fork")
        shmlog.track_data_time(loader, hub=hub)
        assert sorted(torch.cat(list(loader)).tolist()) == [float(i) for i in range(10)]
        # worker0: [0, 2] [4, 6] [8]; worker1: [1, 3] [5, 7] [9]
        assert updates_by_writer(hub) == {"worker0": 3, "worker1": 3}
        assert_times_at_least(hub, DELAY)


# -- epochs: persistent and restarted workers ---------------------------------------------------


def test_persistent_workers_keep_their_labels_across_epochs(name: str, hub: str, tmp_path) -> None:
    with shmlog.init(name) as session:
        loader = shmlog.track_data_time(
            squares_loader(
                "spawn", persistent_workers=True, worker_init_fn=MarkWorker(str(tmp_path), hub)
            ),
            hub=hub,
        )
        for epoch in (1, 2):
            assert values_of(list(loader)) == SQUARES
            assert updates_by_writer(hub) == {"worker0": 2 * epoch, "worker1": 2 * epoch}
        shutdown(loader)

        assert_times_at_least(hub, 2 * DELAY)
        # The same two processes served both epochs, initialised once each.
        assert [(w, label) for w, _pid, label in marks(str(tmp_path))] == [
            (0, "worker0"),
            (1, "worker1"),
        ]
        assert rings_of(session, hub) == 2
        assert sorted(w.label for w in session.shared.slots()) == ["worker0", "worker1"]


def test_restarted_workers_reuse_labels_and_rings(name: str, hub: str, tmp_path) -> None:
    """Non-persistent workers are new processes each epoch: they adopt the old slots."""
    epochs = 3
    with shmlog.init(name) as session:
        loader = shmlog.track_data_time(
            squares_loader("fork", worker_init_fn=MarkWorker(str(tmp_path), hub)), hub=hub
        )
        for _ in range(epochs):
            assert values_of(list(loader)) == SQUARES

        assert updates_by_writer(hub) == {"worker0": 2 * epochs, "worker1": 2 * epochs}
        assert_times_at_least(hub, 2 * DELAY)
        calls = marks(str(tmp_path))
        assert len({pid for _w, pid, _label in calls}) == 2 * epochs  # new processes ...
        assert sorted({(w, label) for w, _pid, label in calls}) == [
            (0, "worker0"),
            (1, "worker1"),
        ]  # ... with the same labels
        assert rings_of(session, hub) == 2
        assert rings_of(session, hub, "init/mark") == 2
        assert sorted(w.label for w in session.shared.slots()) == ["worker0", "worker1"]


# -- num_workers=0, pin_memory --------------------------------------------------------------------


def test_main_process_fetching_records_under_its_own_label(name: str, hub: str) -> None:
    collate = 0.005
    with shmlog.init(name) as session:
        loader = shmlog.track_data_time(
            squares_loader(None, num_workers=0, collate_fn=SlowCollate(collate)), hub=hub
        )
        for epoch in (1, 2):
            assert values_of(list(loader)) == SQUARES
            assert updates_by_writer(hub) == {"main": 4 * epoch}
        assert_times_at_least(hub, 2 * DELAY + collate)
        assert rings_of(session, hub) == 1


@pytest.mark.filterwarnings("ignore:.*pin_memory.*:UserWarning")
@pytest.mark.parametrize("workers", [0, 2])
def test_pin_memory(name: str, hub: str, workers: int) -> None:
    with shmlog.init(name):
        loader = shmlog.track_data_time(
            squares_loader("fork", num_workers=workers, pin_memory=True), hub=hub
        )
        assert values_of(list(loader)) == SQUARES
        expected = {"main": 4} if workers == 0 else {"worker0": 2, "worker1": 2}
        assert updates_by_writer(hub) == expected
        assert_times_at_least(hub, 2 * DELAY)


# -- outside a session ------------------------------------------------------------------------------


def test_outside_a_session_workers_log_privately_and_it_warns_once(hub: str) -> None:
    loader = shmlog.track_data_time(squares_loader(), hub=hub)
    with pytest.warns(UserWarning, match="no shmlog session is open"):
        assert values_of(list(loader)) == SQUARES
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        assert values_of(list(loader)) == SQUARES
    # The workers' hubs were their own: nothing reached this process.
    assert KEY not in MessageHub.get_instance(hub).log_scalars


def test_outside_a_session_the_main_process_still_records(hub: str) -> None:
    loader = shmlog.track_data_time(squares_loader(None, num_workers=0), hub=hub)
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        assert values_of(list(loader)) == SQUARES
    assert updates_by_writer(hub) == {"local": 4}
    assert_times_at_least(hub, 2 * DELAY)


# -- wiring: worker_init_fn, re-tracking, reassignment ------------------------------------------------


def test_worker_init_fn_alone(name: str, hub: str, tmp_path) -> None:
    init = shmlog.worker_init_fn(MarkWorker(str(tmp_path), hub), mode="test", hub=hub)
    assert pickle.loads(pickle.dumps(init)).user_fn.directory == str(tmp_path)
    with shmlog.init(name):
        loader = squares_loader("spawn", worker_init_fn=init)
        assert values_of(list(loader)) == SQUARES
        assert updates_by_writer(hub, "test/worker_data_time") == {"worker0": 2, "worker1": 2}
        assert [label for _w, _pid, label in marks(str(tmp_path))] == ["worker0", "worker1"]


def test_tracking_again_replaces_the_key_instead_of_nesting(name: str, hub: str, tmp_path) -> None:
    user = MarkWorker(str(tmp_path), hub)
    loader = squares_loader(worker_init_fn=user)
    shmlog.track_data_time(loader, key="first/data_time", hub=hub)
    shmlog.track_data_time(loader, mode="val", hub=hub)
    assert loader.worker_init_fn.user_fn is user
    with shmlog.init(name):
        assert values_of(list(loader)) == SQUARES
        scalars = MessageHub.get_instance(hub).log_scalars
        assert "first/data_time" not in scalars
        assert updates_by_writer(hub, "val/worker_data_time") == {"worker0": 2, "worker1": 2}
        assert len(marks(str(tmp_path))) == 2


def test_worker_init_fn_reassigned_after_tracking_is_still_wrapped(
    name: str, hub: str, tmp_path
) -> None:
    loader = shmlog.track_data_time(squares_loader(), hub=hub)
    loader.worker_init_fn = MarkWorker(str(tmp_path), hub)
    with shmlog.init(name):
        assert values_of(list(loader)) == SQUARES
        assert updates_by_writer(hub) == {"worker0": 2, "worker1": 2}
        assert [label for _w, _pid, label in marks(str(tmp_path))] == ["worker0", "worker1"]


def test_calling_the_init_fn_in_the_main_process_patches_nothing(hub: str, tmp_path) -> None:
    from torch.utils.data.dataloader import _DatasetKind

    before = _DatasetKind.__dict__["create_fetcher"]
    shmlog.worker_init_fn(MarkWorker(str(tmp_path), hub), hub=hub)(3)
    assert _DatasetKind.__dict__["create_fetcher"] is before
    assert [w for w, _pid, _label in marks(str(tmp_path))] == [3]


def test_importing_shmlog_does_not_import_torch() -> None:
    code = "import sys, shmlog, shmlog.api.dataloader; sys.exit('torch' in sys.modules)"
    done = subprocess.run([sys.executable, "-c", code], timeout=60, check=False)
    assert done.returncode == 0


# -- bad arguments ------------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("call", "error", "message"),
    [
        (lambda: shmlog.track_data_time([1, 2]), TypeError,
         "loader: expected a torch.utils.data.DataLoader, got list"),
        (lambda: shmlog.track_data_time(squares_loader(), key=""), TypeError,
         "key: expected a non-empty str"),
        (lambda: shmlog.track_data_time(squares_loader(), key=3), TypeError,
         "key: expected a non-empty str .* got 3"),
        (lambda: shmlog.track_data_time(squares_loader(), mode="Train"), ValueError,
         "mode: expected one of 'train', 'val', 'test', got 'Train'"),
        (lambda: shmlog.track_data_time(squares_loader(), key="a/b", mode="val"), ValueError,
         "key='a/b' and mode='val': give one of them"),
        (lambda: shmlog.track_data_time(squares_loader(), hub=None), TypeError,
         "hub: expected a MessageHub or the non-empty name of one .* got None"),
        (lambda: shmlog.worker_init_fn("not callable"), TypeError,
         "user_fn: expected a callable .* got 'not callable'"),
        (lambda: shmlog.worker_init_fn(0), TypeError,
         "without calling it"),
        (lambda: shmlog.worker_init_fn(mode="eval"), ValueError,
         "mode: expected one of"),
    ],
)
def test_bad_arguments_are_named(call, error: type, message: str) -> None:
    with pytest.raises(error, match=message):
        call()
