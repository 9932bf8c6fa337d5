"""One actor per container: the only place that changes a container's state.

An actor is a :class:`~asyncstart.mailbox.Mailbox` and the state behind it, served by a task
while it has messages (an idle actor has none): requests, the runtime's ``StateChanged`` reports
and its timers are handled one at a time (dockerd's per-container lock,
without a lock), each request by the handler of its :class:`~asyncstart.lifecycle.Request`. A
reply may be *parked* until its condition comes (a start until the runtime reports the process
started, a stop until the exit); while a start waits for that report, other requests are
deferred, and a second start joins the first. What a state refuses is the table
:data:`~asyncstart.lifecycle.REFUSALS`; what each moment changes is
:class:`~asyncstart.container.ContainerState`'s. The daemon reads a container only through
:meth:`ContainerActor.snapshot`.
"""

from __future__ import annotations

import contextlib
import dataclasses
import signal as _signal
import time
from collections.abc import AsyncIterator, Callable
from contextlib import AbstractAsyncContextManager, asynccontextmanager
from typing import Any, ClassVar

import anyio
import anyio.abc

from . import errors
from ._log import get_logger
from .attach import AttachSession, ContainerIO
from .config import HostConfig
from .container import ActorServices, ContainerState
from .detach import detach_keys_for
from .events import network_event
from .lifecycle import PROCESS_STATES, LifecycleEvent, Request, State
from .logs import ContainerLogs, LogQuery, read_log_chunks
from .mailbox import Call, Message, Pending, Reply, RuntimeReport
from .network.base import default_route
from .network.files import embed_resolver
from .networks import NetworkSpec, attachment_of, dns_names, refuse_shared_namespace
from .record import ContainerRecord, wait_result
from .restart import RestartManager
from .runtime import StateInfo
from .signals import parse_signal
from .spec import update_resources
from .steps import StartContext, container_log_options, container_stdio
from .views import ContainerSnapshot, endpoint_view, joined_networks

__all__ = ["ActorServices", "ContainerActor", "ContainerSnapshot", "Pending"]

log = get_logger("asyncstart.actor")

_E = LifecycleEvent


class ContainerActor(ContainerState):
    """A container's task and mailbox; see the module docstring."""

    #: The method that answers each request: ``handler(reply, *args)``. (Named, not bound
    #: per actor: thousands of idle actors keep no more objects than they need.)
    _HANDLERS: ClassVar[dict[Request, str]] = {
        Request.START: "_h_start",
        Request.STOP: "_h_stop",
        Request.KILL: "_h_kill",
        Request.PAUSE: "_h_pause",
        Request.UNPAUSE: "_h_unpause",
        Request.REMOVE: "_h_remove",
        Request.WAIT: "_h_wait",
        Request.ADOPT: "_h_adopt",
        Request.RENAME: "_h_rename",
        Request.UPDATE: "_h_update",
        Request.CONNECT: "_h_connect",
        Request.DISCONNECT: "_h_disconnect",
    }

    def __init__(
        self, record: ContainerRecord, services: ActorServices, *, new: bool = False
    ) -> None:
        super().__init__(record, services)
        #: Just created (not reopened): the actor announces it.
        self._new = new

    def open(self) -> None:
        """Announce a new container (before the create is answered), re-arm a restart that
        was pending when an older daemon stopped, and take messages from now on."""
        if self._new:
            self._emit("create")
        if self._lifecycle.state is State.RESTARTING:
            # Reopened while a restart was pending: its timer died with the old daemon.
            self._timers.arm("restart", self._restart.should_restart_again())
        self._mailbox.serve_on(self.services.dispatcher, self)

    def shut_down(self) -> None:
        """The daemon closes: what is queued, deferred and parked is answered with 503."""
        self._mailbox.shut_down()

    # -- the mailbox's side (:class:`~asyncstart.mailbox.Owner`) ---------------------------

    def holding(self) -> bool:
        return self._lifecycle.state is State.SPEC_READY

    def finished(self) -> bool:
        return self._lifecycle.state is State.REMOVED

    def answer_when_gone(self, call: Call) -> dict[str, Any] | None:
        if call.request is Request.WAIT and call.args == ("removed",):
            return wait_result(self._record)
        return None  # 404

    def mailbox_closed(self, error: errors.DockerError) -> None:
        # No caller is left waiting on an actor that is gone (a ``wait`` for an exit that
        # will not come): 404 once removed, 503 when the daemon closes.
        self._waiters.fail_all(error)

    async def handle(self, message: Message) -> None:
        if not isinstance(message, Call):
            # Nobody waits on a report or a timer: a failure is logged, and the actor goes on.
            try:
                if isinstance(message, RuntimeReport):
                    await self._on_report(message.info)
                elif self._timers.fired(message):
                    await self._on_timer(message.kind)
            except Exception:
                log.exception("actor.event_failed", container_id=self.id, message=repr(message))
        elif self._lifecycle.state is State.REMOVED:
            message.reply.fail(errors.NotFound(f"No such container: {self.id}"))
        elif self._lifecycle.state is State.SPEC_READY and message.request is not Request.START:
            self._mailbox.defer(message)  # as dockerd's lock: after the start is decided
        else:
            handler = getattr(self, self._HANDLERS[message.request])
            await self._mailbox.answer(message, handler, self.id)

    def state_changed(self, info: StateInfo) -> None:
        """The runtime's report, queued (never blocks the runtime)."""
        if not self._mailbox.post(RuntimeReport(info)):
            log.debug("actor.report_after_remove", container_id=self.id, state=info.state)

    async def request(self, request: Request, *args: Any) -> Any:
        """Ask, through the mailbox, and wait for the answer (dockerd's error if refused)."""
        return await self._mailbox.request(request, *args).wait()

    def request_pending(self, request: Request, *args: Any) -> Pending:
        """Ask and return at once; ``await pending.wait()`` for the answer. A request made
        after this returns is ordered after it (a start cannot slip past a wait)."""
        return self._mailbox.request(request, *args)

    async def restart(self, timeout: float | None = None) -> None:
        """Stop (if it runs), start, then announce the restart, as ``docker restart``."""
        with contextlib.suppress(errors.NotModified):
            await self.request(Request.STOP, timeout)
        with contextlib.suppress(errors.NotModified):
            await self.request(Request.START, None, None)
        self._emit("restart")

    @property
    def io(self) -> ContainerIO:
        """Attach here: clients' input and the container's output (no state changes)."""
        return self._io

    def attach(
        self, reference: str, streams: frozenset[str], stdin: bool, detach_keys: bytes = b""
    ) -> AbstractAsyncContextManager[AttachSession]:
        """``docker attach`` as ``reference``: refused (409) here if the container is paused or
        restarting; the session subscribes to ``streams`` when entered."""
        self.check(Request.ATTACH, reference)
        return self._attached(streams, stdin, detach_keys)

    @asynccontextmanager
    async def _attached(
        self, streams: frozenset[str], stdin: bool, detach_keys: bytes
    ) -> AsyncIterator[AttachSession]:
        receive = self._io.hub.subscribe(streams)
        self._emit("attach")
        config = self._record.config
        keys = detach_keys_for(detach_keys, config.tty)
        session = AttachSession(
            self._io, receive, stdin, tty=config.tty, once=config.stdin_once, detach_keys=keys
        )
        try:
            yield session
        finally:
            self._io.hub.unsubscribe(receive)
            if session.detached:
                self._emit("detach")

    def logs(self, query: LogQuery) -> ContainerLogs:
        """The container's log, json-file or conmon's k8s-file (see
        :meth:`asyncstart.Daemon.container_logs`)."""
        attrs = None
        if query.details:
            # k8s-file entries carry no attributes: the container's, as its start computes them
            # (options refused since create: the entries' own only, the logs still readable).
            with contextlib.suppress(errors.InvalidParameter):
                attrs = container_log_options(self._record).attrs
        chunks = read_log_chunks(
            self.services.records.log_path(self.id),
            query,
            running=lambda: self._lifecycle.running,
            attrs=attrs,
        )
        return ContainerLogs(chunks, tty=self._record.config.tty)

    async def _h_start(
        self, reply: Reply, checkpoint: str | None, checkpoint_dir: str | None
    ) -> None:
        if self._lifecycle.state is State.SPEC_READY:
            self._waiters.park("start", reply)  # a start is in flight: answer with it
            return
        self.check(Request.START)
        # A user start resets the restart policy's count and backoff (ResetRestartManager).
        self._restart = RestartManager(self._record.host_config.restart_policy)
        self._record.restart_count = 0
        self._record.has_been_manually_stopped = False
        self._lifecycle.handle(_E.START)
        self._waiters.park("start", reply)
        await self._start_saga(StartContext(self._record, checkpoint, checkpoint_dir))

    async def _on_report(self, info: StateInfo) -> None:
        state = self._lifecycle.state
        ctx = self._ctx
        if info.state == "start":
            if state is State.SPEC_READY and ctx is not None and info.pid == ctx.pid:
                await self._on_started(info)
            else:
                log.debug("runtime.stray_start", container_id=self.id, pid=info.pid)
        elif info.state == "exit":
            if state in PROCESS_STATES and info.pid == self._record.pid:
                await self._on_exited(info)
            elif state is State.SPEC_READY and ctx is not None and info.pid == ctx.pid:
                # The start report was lost or overtaken: the process did start, then ended.
                await self._on_started(StateInfo("start", pid=info.pid, at=info.at))
                await self._on_exited(info)
            else:
                log.debug("runtime.duplicate_exit", container_id=self.id, pid=info.pid)
        elif info.state == "oom":
            self._record.oom_killed = True
            self._emit("oom")

    async def _h_adopt(self, reply: Reply) -> None:
        if self._lifecycle.state not in PROCESS_STATES:
            reply.set(False)
            return
        stdio = container_stdio(self._record, self.services.records.log_file, self._io.hub.publish)
        found = await self.services.runtime.restore(self.id, stdio)
        if found is not None and found.state == "start":
            reply.set(True)
            return
        # Taken as an exit, so that what its start took is given back as at any exit: with the
        # code and time its monitor kept, else dockerd's 255 for an exit nobody saw.
        if found is not None and found.state == "exit":
            lost = dataclasses.replace(found, pid=self._record.pid)
        else:
            lost = StateInfo("exit", pid=self._record.pid, exit_code=255, at=time.time())
        await self._on_exited(lost)
        reply.set(False)

    async def _on_timer(self, kind: str) -> None:
        state = self._lifecycle.state
        if kind == "restart" and state is State.RESTARTING:
            self._lifecycle.handle(_E.RESTART_DUE)
            log.info("container.restarting", container_id=self.id, count=self._record.restart_count)
            await self._start_saga(StartContext(self._record))
        elif kind == "stop-timeout" and state is State.STOPPING:
            try:
                await self._signal(_signal.SIGKILL, resume=False)
            except errors.SystemError as exc:
                error = errors.SystemError(f"cannot stop container: {self.id}: {exc.message}")
                self._waiters.fail("stop", error)

    async def _h_stop(self, reply: Reply, timeout: float | None) -> None:
        state = self._lifecycle.state
        if state is State.RESTARTING:
            self._cancel_restart()
            await self._save()
            self._emit("stop")
            reply.set()
            return
        self.check(Request.STOP)
        self._waiters.park("stop", reply)
        config = self._record.config
        if timeout is None:
            timeout = config.stop_timeout
        if timeout is None:
            timeout = self.services.stop_timeout
        stop_signal = parse_signal(config.stop_signal or None, default=_signal.SIGTERM)
        if state is not State.STOPPING:  # a second stop signals again, as dockerd's does
            self._lifecycle.handle(_E.STOP)
        try:
            await self._signal(stop_signal, resume=state is State.PAUSED)
        except errors.SystemError:
            timeout = min(timeout, 2.0) if timeout >= 0 else 2.0
        if timeout >= 0:
            self._timers.arm("stop-timeout", timeout)

    async def _h_kill(self, reply: Reply, signal: int, reference: str) -> None:
        state = self._lifecycle.state
        if state is State.RESTARTING:
            if self._exits_on_next(signal):
                self._cancel_restart()
                await self._save()
            reply.set()
            return
        self.check(Request.KILL, reference)
        await self._signal(signal, resume=state is State.PAUSED and self._exits_on_next(signal))
        if signal == _signal.SIGKILL:
            self._waiters.park("kill", reply)  # KILL means kill and wait (dockerd)
        else:
            reply.set()

    async def _h_pause(self, reply: Reply) -> None:
        self.check(Request.PAUSE)
        await self._pause_or_resume(self._process.pause, _E.PAUSE)
        reply.set()

    async def _h_unpause(self, reply: Reply) -> None:
        self.check(Request.UNPAUSE)
        await self._pause_or_resume(self._process.resume, _E.UNPAUSE)
        reply.set()

    async def _h_wait(self, reply: Reply, condition: str) -> None:
        if condition == "removed":
            self._waiters.park("removed", reply)
        elif condition == "next-exit" or self._lifecycle.running:
            self._waiters.park("exit", reply)
        else:
            reply.set(wait_result(self._record))

    async def _h_update(self, reply: Reply, change: Callable[[HostConfig], HostConfig]) -> None:
        """``docker update``: the record's host config changed by ``change`` (the daemon's
        checks and merge); a live process gets the new limits first (a refusal leaves all as
        it was), a restart policy takes over the restart count."""
        self.check(Request.UPDATE)
        record = self._record
        old = record.host_config
        new = change(old)
        if self._lifecycle.state in PROCESS_STATES and not self._lifecycle.restarting:
            await self._process.update(self.id, update_resources(old, new))
        record.host_config = new
        try:
            await self._save()
        except BaseException:
            record.host_config = old
            raise
        if new.restart_policy != old.restart_policy:
            count = self._restart.restart_count
            self._restart = RestartManager(new.restart_policy)
            self._restart.restart_count = count
        self._emit("update")
        reply.set()

    async def _h_rename(self, reply: Reply, name: str) -> None:
        self.check(Request.RENAME)
        old = self._record.name
        self._record.name = name
        self._rename_endpoints(old.lstrip("/"), name.lstrip("/"))
        try:
            await self._save()
        except BaseException:
            self._record.name = old
            self._rename_endpoints(name.lstrip("/"), old.lstrip("/"))
            raise
        self._emit("rename", oldName=old)
        reply.set()

    def _rename_endpoints(self, old: str, new: str) -> None:
        """A running container's names on its user-defined networks follow its new name."""
        record, resolver = self._record, self.services.resolver
        networks = dict(record.network_settings.get("Networks", {}))
        for network, endpoint in networks.items():
            if not endpoint.get("DNSNames"):
                continue
            names = [new if n == old else n for n in endpoint["DNSNames"]]
            networks[network] = {**endpoint, "DNSNames": names}
            if resolver is not None and self._lifecycle.state in PROCESS_STATES:
                resolver.register(
                    self.id, endpoint["NetworkID"], network, endpoint["IPAddress"], names
                )
        record.network_settings = {**record.network_settings, "Networks": networks}

    async def _h_connect(self, reply: Reply, spec: NetworkSpec, config: dict[str, Any]) -> None:
        self.check(Request.CONNECT)
        record = self._record
        refuse_shared_namespace(record.host_config.network_mode)
        joined = self._endpoints()
        if self._lifecycle.state in PROCESS_STATES and record.network_settings.get("SandboxKey"):
            if spec.name in record.network_settings.get("Networks", {}):
                raise errors.Forbidden(
                    f"endpoint with name {record.name.lstrip('/')} already exists in network "
                    f"{spec.name}"
                )
            await self._join(spec, config)
        elif spec.name in joined:
            reply.set()  # (dockerd: a stopped container's second connect is no change)
            return
        record.endpoints = {**joined, spec.name: config}
        await self._save()
        reply.set()

    async def _join(self, spec: NetworkSpec, config: dict[str, Any]) -> None:
        """A running container's new network: its interface, its names, its event."""
        record, network, resolver = self._record, self.services.network, self.services.resolver
        assert network is not None
        ipv4 = (config.get("IPAMConfig") or {}).get("IPv4Address", "")
        attachment = attachment_of(spec, ipv4)
        sandbox = record.network_settings["SandboxKey"]
        route = self._default_route({spec.name: attachment.bridge.endpoint_gateway})
        live = await network.connect(self.id, sandbox, attachment, route=route)
        names = dns_names(spec, record, config)
        endpoint = endpoint_view(config, live, names)
        networks = {**record.network_settings.get("Networks", {}), spec.name: endpoint}
        record.network_settings = {**record.network_settings, "Networks": networks}
        if resolver is not None and names:
            joined = {**record.network_settings, "Networks": {spec.name: endpoint}}
            host = record.host_config
            try:
                dns = host.dns or ()
                await resolver.attach(self.id, joined, dns, forward=not spec.internal)
                if path := record.network_settings.get("ResolvConfPath"):
                    # (started on the default bridge: the embedded server named from now on)
                    search, options = host.dns_search or (), host.dns_options or ()
                    await anyio.to_thread.run_sync(embed_resolver, path, dns, search, options)
            except errors.DockerError as exc:  # connected all the same, as the names go
                log.warning("dns.not_served", container_id=self.id, error=exc.message)
            except OSError as exc:
                log.warning("dns.resolv_conf_not_updated", container_id=self.id, error=str(exc))
        network_event(self.services.bus, spec.id, spec.name, self.id, "connect")

    async def _h_disconnect(self, reply: Reply, spec: NetworkSpec, force: bool) -> None:
        self.check(Request.DISCONNECT)
        record = self._record
        if spec.driver == "host" and record.host_config.network_mode == "host":
            raise errors.InvalidParameter(
                "cannot disconnect container from host network - container was created in "
                "host network mode"
            )
        running = self._lifecycle.state in PROCESS_STATES
        live = record.network_settings.get("Networks", {}).get(spec.name) if running else None
        joined = self._endpoints()
        if live is None and spec.name not in joined:
            where = "network" if running else "the network"
            raise errors.SystemError(f"container {self.id} is not connected to {where} {spec.name}")
        if live is not None:
            await self._leave(spec, live)
        record.endpoints = {name: c for name, c in joined.items() if name != spec.name}
        await self._save()
        reply.set()

    async def _leave(self, spec: NetworkSpec, live: dict[str, Any]) -> None:
        """A running container leaves a network: its interface, its names, its event."""
        record, network = self._record, self.services.network
        if network is not None and spec.bridge:
            sandbox = record.network_settings.get("SandboxKey", "")
            route = self._default_route({spec.name: ""})  # (as if it had no gateway: it goes)
            address = live.get("IPAddress", "")
            await network.disconnect(self.id, sandbox, attachment_of(spec), address, route=route)
        if self.services.resolver is not None:
            self.services.resolver.unregister(self.id, spec.id)
        networks = dict(record.network_settings.get("Networks", {}))
        networks.pop(spec.name, None)
        record.network_settings = {**record.network_settings, "Networks": networks}
        network_event(self.services.bus, spec.id, spec.name, self.id, "disconnect")

    def _default_route(self, changed: dict[str, str]) -> str | None:
        """The gateway of the running container's default route once its networks are those
        it is on with ``changed`` (network name -> endpoint gateway, "" for none)."""
        live = self._record.network_settings.get("Networks", {})
        gateways = {name: str(endpoint.get("Gateway") or "") for name, endpoint in live.items()}
        return default_route({**gateways, **changed}.items())

    def _endpoints(self) -> dict[str, dict[str, Any]]:
        record = self._record
        return joined_networks(record.endpoints, record.host_config.network_mode)

    async def _h_remove(self, reply: Reply, force: bool, reference: str) -> None:
        state = self._lifecycle.state
        self.check(Request.FORCE_REMOVE if force else Request.REMOVE, reference)
        if state is State.RESTARTING:
            self._cancel_restart()
        elif state in PROCESS_STATES:
            try:
                await self._signal(_signal.SIGKILL, resume=state is State.PAUSED)
            except errors.SystemError as exc:
                raise errors.SystemError(
                    f'cannot remove container "{self._record.name}": could not kill: {exc.message}'
                ) from exc
            self._waiters.park("removal", reply)  # answered once the process has exited
            return
        self._waiters.park("removal", reply)
        await self._remove_now()
