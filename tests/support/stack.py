"""One way to stand up the process-level proxy stack: a scratch data dir (optionally with a banked
photo), a throwaway upstream PKI, the recording HTTPS upstream and a real `schoolgate run` with a
private /etc/hosts. Every e2e suite builds its stack here instead of repeating the steps."""

from __future__ import annotations

import contextlib
from collections.abc import Callable, Iterator, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Protocol

import httpx
import pytest
from PIL import Image

from tests.support.proxy_harness import (
    ProxyProcess,
    UpstreamPki,
    bank_photo,
    can_isolate_hosts,
    client_ssl_context,
    free_port,
    make_upstream_pki,
    start_proxy,
    start_upstream,
    write_config,
)

# The proxy suites give `schoolgate run` its own /etc/hosts through a mount namespace.
needs_private_hosts = pytest.mark.skipif(
    not can_isolate_hosts(),
    reason="needs root and unshare(1) to give the proxy a private /etc/hosts",
)


class Stoppable(Protocol):
    def stop(self) -> None: ...


@dataclass
class ProxyStack[U: Stoppable]:
    work: Path
    data_dir: Path
    pki: UpstreamPki
    config_path: Path
    upstream: U
    proxy: ProxyProcess

    @property
    def upstream_ca(self) -> Path:
        return self.pki.ca_pem

    def client(self, *, http2: bool = False, timeout: float = 60) -> httpx.Client:
        """An httpx client through the proxy, trusting the school CA and the upstream's."""
        context = client_ssl_context(self.proxy.ca_pem, self.pki.ca_pem)
        return httpx.Client(
            proxy=self.proxy.url, verify=context, timeout=timeout, http2=http2, http1=True
        )

    def decisions(self) -> list[dict[str, Any]]:
        return self.proxy.audit_records()

    def stop(self) -> None:
        """Proxy first (it may still be talking to the upstream), then the upstream."""
        try:
            self.proxy.stop()
        finally:
            self.upstream.stop()


def start_proxy_stack[U: Stoppable](
    work: Path,
    *,
    upstream: Callable[[UpstreamPki], U],
    banked: Image.Image | None = None,
    seed: Callable[[Path], None] | None = None,
    pki_hosts: Sequence[str] = (),
    extra_hosts: Sequence[str] = (),
    **config: Any,
) -> ProxyStack[U]:
    """Build and start the stack in `work`. `banked` goes into the test bank; `seed` may put
    anything else into the data dir first; `config` is passed to `write_config`."""
    data_dir = work / "data"
    data_dir.mkdir()
    if banked is not None:
        bank_photo(data_dir, banked)
    if seed is not None:
        seed(data_dir)
    pki = make_upstream_pki(work / "pki", extra_hosts=pki_hosts)
    port = free_port()
    config_path = write_config(work, port, pki, **config)
    running = upstream(pki)
    try:
        proxy = start_proxy(config_path, data_dir, port, work, extra_hosts=extra_hosts)
    except BaseException:
        running.stop()
        raise
    return ProxyStack(work, data_dir, pki, config_path, running, proxy)


@contextlib.contextmanager
def proxy_stack[U: Stoppable](
    work: Path, *, upstream: Callable[[UpstreamPki], U], **options: Any
) -> Iterator[ProxyStack[U]]:
    """`start_proxy_stack` as a context manager: stopped however the block ends."""
    stack = start_proxy_stack(work, upstream=upstream, **options)
    try:
        yield stack
    finally:
        stack.stop()


def recording_stack(work: Path, **options: Any) -> contextlib.AbstractContextManager[Any]:
    """The usual stack: proxy_harness's recording HTTPS upstream."""
    return proxy_stack(work, upstream=start_upstream, **options)
