"""The relay for TLS the proxy passes through unread: judged by its first ClientHello, and
watched until the server's first message, because a HelloRetryRequest lets the client name
another server in a second hello (schoolgate.sniffer.tlsretry; adversarial pass a25 H1: 2 of 2
banked uploads through the proxy to an address it did not know as catalogued)."""

from __future__ import annotations

from collections.abc import Callable

from mitmproxy.proxy import commands, events, layer
from mitmproxy.proxy.context import Context
from mitmproxy.proxy.layers.tcp import TCPLayer

from schoolgate.sniffer.tlsretry import RetryWatch, Watch


class WatchedPassThrough(TCPLayer):
    """mitmproxy's own unread relay (TCPLayer, ignore=True), which first shows each byte to a
    RetryWatch: `skip` client bytes are the first hello, already judged; a second hello that
    names another server closes both sides before the server's answer to it reaches the client,
    and `refused(reason)` records why."""

    def __init__(
        self, context: Context, first_sni: str | None, skip: int, refused: Callable[[str], None]
    ) -> None:
        super().__init__(context, ignore=True)
        self.watch: RetryWatch | None = RetryWatch(first_sni)
        self.skip = skip
        self.refused = refused

    def relay_messages(self, event: events.Event) -> layer.CommandGenerator[None]:
        if self.watch is not None and isinstance(event, events.DataReceived):
            if event.connection == self.context.client:
                cut = min(self.skip, len(event.data))
                self.skip -= cut
                self.watch.client(event.data[cut:])
            else:
                self.watch.server(event.data)
            verdict = self.watch.verdict()
            if verdict.watch is Watch.REFUSE:
                self.refused(verdict.reason)
                self._handle_event = self.done
                yield commands.CloseConnection(self.context.server)
                yield commands.CloseConnection(self.context.client)
                return
            if verdict.watch is Watch.DONE:
                # The rest is relayed unread, by mitmproxy's own relay without this one.
                self.watch = None
                self._handle_event = super().relay_messages
        yield from super().relay_messages(event)  # which checks the event's type
