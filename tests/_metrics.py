"""Helpers for the metrics tests: scrape an endpoint, parse it with prometheus_client's parsers."""

from __future__ import annotations

import contextlib
import math
import os
import select
import urllib.request
from collections.abc import Iterator
from typing import NamedTuple

OPENMETRICS = "application/openmetrics-text; version=1.0.0"
TIMEOUT = 30.0


class Scrape(NamedTuple):
    content_type: str
    body: str
    # (sample name, sorted label items) -> value
    samples: dict[tuple[str, tuple[tuple[str, str], ...]], float]
    types: dict[str, str]  # family name -> type

    def value(self, name: str, **labels: str) -> float:
        return self.samples[(name, tuple(sorted(labels.items())))]

    def series(self, name: str) -> dict[tuple[tuple[str, str], ...], float]:
        return {labels: v for (n, labels), v in self.samples.items() if n == name}

    def scalar(self, name: str, hub: str, key: str, writer: str) -> float:
        return self.value(name, hub=hub, key=key, writer=writer)


def scrape(url: str, openmetrics: bool = False, timeout: float = TIMEOUT) -> Scrape:
    """GET ``url`` (asking for OpenMetrics or not) and parse it with the matching parser."""
    headers = {"Accept": OPENMETRICS} if openmetrics else {}
    with urllib.request.urlopen(urllib.request.Request(url, headers=headers),
                                timeout=timeout) as response:
        content_type = response.headers["Content-Type"]
        body = response.read().decode("utf-8")
    return parse(body, content_type, openmetrics)


def parse(body: str, content_type: str = "", openmetrics: bool = False) -> Scrape:
    if openmetrics:
        from prometheus_client.openmetrics.parser import text_string_to_metric_families
    else:
        from prometheus_client.parser import text_string_to_metric_families
    samples: dict[tuple[str, tuple[tuple[str, str], ...]], float] = {}
    types: dict[str, str] = {}
    for family in text_string_to_metric_families(body):
        types[family.name] = family.type
        for sample in family.samples:
            ident = (sample.name, tuple(sorted(sample.labels.items())))
            assert ident not in samples, f"series {ident} appears twice"
            samples[ident] = sample.value
    return Scrape(content_type, body, samples, types)


def same(a: float, b: float) -> bool:
    """Equal, NaN equal to NaN."""
    return (math.isnan(a) and math.isnan(b)) or a == b


def wait_gone(pid: int, timeout: float = TIMEOUT) -> bool:
    """Wait until process ``pid`` (not necessarily a child) has ended, its sockets closed."""
    try:
        fd = os.pidfd_open(pid)
    except ProcessLookupError:
        return True
    try:
        return bool(select.select([fd], [], [], timeout)[0])
    finally:
        os.close(fd)


@contextlib.contextmanager
def closing_new_loggers() -> Iterator[None]:
    """Close and forget the MMLoggers made inside: none outlives its test as 'current'."""
    from shmlog import MMLogger

    before = set(MMLogger._instance_dict)
    try:
        yield
    finally:
        for key in set(MMLogger._instance_dict) - before:
            logger = MMLogger._instance_dict.pop(key)
            for handler in list(logger.handlers):
                handler.close()
                logger.removeHandler(handler)
