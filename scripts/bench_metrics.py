"""What one scrape of the metrics endpoint costs, for a session of 32 keys x 8 writers.

Eight forked children (labelled as DataLoader workers ``worker0``..``worker7``)
each log the same 32 keys, 1,000 records per key, so the session holds 256
rings.  Then, first with the children idle and then with each of them
logging its 32 keys every 10 ms (about 25,600 updates/s in all), the script
measures:

* reading the session (``Sampler.sample``): what a scrape spends in the
  rings, the only part that touches shared memory;
* the whole exposition in this process: sampling plus prometheus_client's
  text and OpenMetrics serialization (``generate_latest``);
* an HTTP GET of ``/metrics`` from ``shmlog serve`` running as its own
  process: the wall time per scrape, and the CPU time the serving process
  spent per scrape (from /proc, so it counts every thread of it).

Medians over the scrapes; the load average is printed before and after,
since other work on the machine skews every figure.  The training
processes take no part in a scrape: it stores nothing into the session and
takes no lock the writers use.  Usage::

    python scripts/bench_metrics.py            # 100 scrapes per figure
    python scripts/bench_metrics.py --quick    # a smoke run of a few seconds
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import subprocess
import sys
import time
import urllib.request
import uuid
from typing import Any

from benchkit import fork_context, join_children, load_average, shm_entries, wait_events

KEYS, WRITERS, RECORDS = 32, 8, 1000
PACE_SECONDS = 0.010
OPENMETRICS = "application/openmetrics-text; version=1.0.0"


def _writer(worker: int, records: int, ready: Any, logging: Any, stop: Any) -> None:
    from shmlog import MessageHub

    os.environ["SHMLOG_WORKER_ID"] = str(worker)
    hub = MessageHub.get_instance("mmengine")
    keys = [f"train/key{k:02d}" for k in range(KEYS)]
    for record in range(records):
        for key in keys:
            hub.update_scalar(key, float(record))
    ready.set()
    logging.wait()
    value = 0.0
    while not stop.wait(PACE_SECONDS):
        value += 1.0
        for key in keys:
            hub.update_scalar(key, value)


def _median_seconds(call: Any, times: int) -> float:
    spent = []
    for _ in range(times):
        began = time.perf_counter()
        call()
        spent.append(time.perf_counter() - began)
    return statistics.median(spent)


def _cpu_seconds(pid: int) -> float:
    """User plus system CPU time of process ``pid`` so far, every thread included."""
    from shmlog.shm.liveness import proc_stat

    fields = proc_stat(pid)
    assert fields is not None, f"process {pid} is gone"
    return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")


def _get(url: str, accept: str | None = None) -> bytes:
    headers = {"Accept": accept} if accept else {}
    with urllib.request.urlopen(urllib.request.Request(url, headers=headers), timeout=30) as r:
        return r.read()


def _measure(name: str, url: str, server: int, scrapes: int) -> dict[str, float]:
    from prometheus_client import CollectorRegistry, generate_latest
    from prometheus_client.openmetrics.exposition import generate_latest as openmetrics_latest

    from shmlog.format.exposition import SessionCollector

    collector = SessionCollector.open(name)  # as the endpoint reads the session
    registry = CollectorRegistry()
    registry.register(collector)
    try:
        figures = {
            "read_ms": 1e3 * _median_seconds(collector.sample, scrapes),
            "text_ms": 1e3 * _median_seconds(lambda: generate_latest(registry), scrapes),
            "openmetrics_ms": 1e3 * _median_seconds(lambda: openmetrics_latest(registry), scrapes),
        }
        cpu = _cpu_seconds(server)
        figures["http_text_ms"] = 1e3 * _median_seconds(lambda: _get(url), scrapes)
        figures["http_openmetrics_ms"] = 1e3 * _median_seconds(
            lambda: _get(url, OPENMETRICS), scrapes)
        figures["server_cpu_ms_per_scrape"] = 1e3 * (_cpu_seconds(server) - cpu) / (2 * scrapes)
        body = _get(url)
        figures["body_bytes"] = len(body)
        figures["samples"] = sum(1 for line in body.splitlines() if not line.startswith(b"#"))
    finally:
        collector.close()
    return figures


def main(argv: list[str]) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--quick", action="store_true", help="a few scrapes, a short history")
    parser.add_argument("--json", help="also write the figures to this file")
    args = parser.parse_args(argv)
    try:
        import prometheus_client  # noqa: F401
    except ImportError:
        print("bench_metrics: needs prometheus_client: pip install 'shmlog[metrics]'")
        return 1
    import shmlog

    scrapes = 5 if args.quick else 100
    records = 50 if args.quick else RECORDS
    before_shm = shm_entries()
    name = f"bench-metrics-{uuid.uuid4().hex[:8]}"
    ctx = fork_context()
    ready = [ctx.Event() for _ in range(WRITERS)]
    logging, stop = ctx.Event(), ctx.Event()
    load_before = load_average()
    results: dict[str, Any] = {"keys": KEYS, "writers": WRITERS, "records_per_ring": records,
                               "scrapes": scrapes, "load_before": load_before}
    with shmlog.init(name, log_writer="none"):
        children = [ctx.Process(target=_writer, args=(w, records, ready[w], logging, stop))
                    for w in range(WRITERS)]
        for child in children:
            child.start()
        server = None
        try:
            wait_events(ready, children, "the writers' first records")
            env = {k: v for k, v in os.environ.items() if not k.startswith("SHMLOG_")}
            server = subprocess.Popen([sys.executable, "-m", "shmlog", "serve", name],
                                      stdout=subprocess.PIPE, text=True, env=env)
            url = server.stdout.readline().split()[-1]
            results["idle"] = _measure(name, url, server.pid, scrapes)
            logging.set()
            results["logging"] = _measure(name, url, server.pid, scrapes)
        finally:
            stop.set()
            logging.set()
            join_children(children)
            if server is not None:
                server.terminate()
                server.wait(30)
    results["load_after"] = load_average()
    results["shm_left_as_found"] = shm_entries() == before_shm

    print(f"one scrape of {KEYS} keys x {WRITERS} writers ({records} records per ring), "
          f"median of {scrapes}")
    print(f"load average before {load_before}, after {results['load_after']}")
    for phase, title in (("idle", "writers idle"), ("logging", "writers logging every 10 ms")):
        f = results[phase]
        print(f"  {title}: {f['samples']} samples, {f['body_bytes'] / 1024:.0f} KiB of text")
        print(f"    reading the session           {f['read_ms']:8.2f} ms")
        print(f"    exposition, text              {f['text_ms']:8.2f} ms")
        print(f"    exposition, OpenMetrics       {f['openmetrics_ms']:8.2f} ms")
        print(f"    HTTP GET from shmlog serve    {f['http_text_ms']:8.2f} ms "
              f"(OpenMetrics {f['http_openmetrics_ms']:.2f} ms)")
        print(f"    CPU of shmlog serve per scrape {f['server_cpu_ms_per_scrape']:7.2f} ms")
    print(f"/dev/shm left as found: {'yes' if results['shm_left_as_found'] else 'NO'}")
    if args.json:
        with open(args.json, "w") as out:
            json.dump(results, out, indent=2)
    return 0 if results["shm_left_as_found"] else 1


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
