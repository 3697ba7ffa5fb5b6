"""The relay for TLS the proxy passes through unread: judged by its first ClientHello, and
watched until what the server answers is known, because a HelloRetryRequest lets the client
name another server in a second hello (schoolgate.sniffer.tlsretry; adversarial pass a25 H1: 2
of 2 banked uploads through the proxy to an address it did not know as catalogued), and a TLS
<= 1.2 server that resumes a session takes the session's name, not the hello's
(schoolgate.sniffer.tlsresume; a27 R12). A second hello reaches the server only once it is
judged whole (a34: one split around a ChangeCipherSpec). A client that starts a second handshake
inside the encrypted stream (TLS <= 1.2 renegotiation, whose hello nobody can read; a36 F4) is
cut off before that record reaches the server (schoolgate.sniffer.tlsrenegotiation)."""

from __future__ import annotations

from collections.abc import Callable

from mitmproxy.proxy import commands, events, layer
from mitmproxy.proxy.context import Context
from mitmproxy.proxy.layers.tcp import TCPLayer

from schoolgate.sniffer.tlsrenegotiation import RenegotiationWatch
from schoolgate.sniffer.tlsresume import ACCESS_DENIED_ALERT
from schoolgate.sniffer.tlsretry import RetryWatch, Verdict, Watch

# Client bytes held while the server's TLS <= 1.2 hello is read and not yet whether it resumes
# a session: an ordinary client sends none then; past this, the connection is refused.
MAX_HELD = 64 * 1024


class WatchedPassThrough(TCPLayer):
    """mitmproxy's own unread relay (TCPLayer, ignore=True), which first shows each byte to a
    RetryWatch: `skip` client bytes are the first hello, already judged. A second hello that
    names another server closes both sides before the server's answer to it reaches the
    client; a refused resumption answers the client with a fatal alert instead of the server's
    hello. Every client record header is read to the end (RenegotiationWatch). `refused(verdict)`
    records why."""

    def __init__(
        self,
        context: Context,
        watch: RetryWatch,
        skip: int,
        refused: Callable[[Verdict], None],
    ) -> None:
        super().__init__(context, ignore=True)
        self.watch: RetryWatch | None = watch
        self.skip = skip
        self.refused = refused
        self.held = bytearray()
        self.held_back = bytearray()  # the server's, until its answer is judged
        self.unjudged = bytearray()  # the client's, until its second hello is judged
        self.records = RenegotiationWatch()

    def relay_messages(self, event: events.Event) -> layer.CommandGenerator[None]:
        cut = 0
        if isinstance(event, events.DataReceived) and event.connection == self.context.client:
            cut = min(self.skip, len(event.data))
            self.skip -= cut
            self.records.feed(event.data[cut:])
        if self.watch is None and self.records.refusal:
            yield from self._refuse(self._renegotiated())
            return
        if self.watch is not None and isinstance(event, events.DataReceived):
            from_client = event.connection == self.context.client
            if from_client:
                if self.watch.verdict().hold_client:
                    self.held += event.data[cut:]
                    if len(self.held) <= MAX_HELD:
                        return
                    verdict = Verdict(Watch.REFUSE, "the client sent on before the server's "
                                      "answer was read")  # fmt: skip
                    yield from self._refuse(verdict)
                    return
                self.watch.client(event.data[cut:])
            else:
                self.watch.server(event.data)
            verdict = self.watch.verdict()
            if verdict.watch is Watch.REFUSE:
                yield from self._refuse(verdict)
                return
            if self.records.refusal:  # the retry watch's reason first, then this one
                yield from self._refuse(self._renegotiated())
                return
            if from_client and verdict.unjudged:
                self.unjudged += event.data  # part of a second hello: the server gets it whole
                return
            if self.unjudged:
                yield commands.SendData(self.context.server, bytes(self.unjudged))
                self.unjudged.clear()
            if not from_client and verdict.hold_server:
                self.held_back += event.data
                return
            if self.held_back:
                yield commands.SendData(self.context.client, bytes(self.held_back))
                self.held_back.clear()
            if not verdict.hold_client and self.held:
                self.watch.client(bytes(self.held))
                yield commands.SendData(self.context.server, bytes(self.held))
                self.held.clear()
                verdict = self.watch.verdict()
                if verdict.watch is Watch.REFUSE:
                    yield from self._refuse(verdict)
                    return
            if verdict.watch is Watch.DONE:
                self.watch = None  # the rest is relayed by mitmproxy's own relay, headers read
        yield from super().relay_messages(event)  # which checks the event's type

    def _renegotiated(self) -> Verdict:
        return Verdict(Watch.REFUSE, self.records.refusal, renegotiated=True)

    def _refuse(self, verdict: Verdict) -> layer.CommandGenerator[None]:
        self.refused(verdict)
        self._handle_event = self.done
        if verdict.alert:
            yield commands.SendData(self.context.client, ACCESS_DENIED_ALERT)
        yield commands.CloseConnection(self.context.server)
        yield commands.CloseConnection(self.context.client)
