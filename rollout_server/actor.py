"""The rollout server as a Ray actor: the same HTTP server, placed by the driver, plus a Ray method
through which the trainer hands over LoRA tensors (via the object store, no shared filesystem).

A replica whose vLLM engine dies has Ray restart it (a fresh process, engine and port): it stops
serving, answers the requests in flight with 503, and kills its own actor with restart allowed.
Calls that meet it meanwhile wait for that and then fail as Ray calls to a restarting actor do
(`ActorUnavailableError`), which callers already retry (`shared.ray_calls`)."""

import asyncio
import logging
from typing import Any

import ray

from rollout_server.config import ServerConfig
from rollout_server.errors import RequestError
from rollout_server.runner import EmbeddedServer
from shared.schemas import AdapterInfo, AdapterUpdate

log = logging.getLogger("cxr_rl.rollout_server")


class RolloutServerActor:
    """Use through `ray.remote(RolloutServerActor)`; see `deploy/` for placement options."""

    def __init__(self, config: ServerConfig):
        self.server = EmbeddedServer(config)
        self._starting: asyncio.Future | None = None
        self._url: str | None = None

    async def start(self, ready_timeout_s: float = 900.0) -> str:
        """Start the engine and HTTP server; concurrent and later calls wait for the same start.

        Ray re-runs only the constructor of a restarted actor, so whoever finds a replica down
        calls `start` again and reloads the adapter it should serve."""
        if self._starting is None:
            self._starting = asyncio.ensure_future(self._start(ready_timeout_s))
        url = await asyncio.shield(self._starting)
        await self._unless_engine_died()
        return url

    async def _start(self, ready_timeout_s: float) -> str:
        url = await self.server.start()
        await self.server.wait_ready(ready_timeout_s)
        if self.server.config.host in ("0.0.0.0", "::"):  # reachable from other nodes: advertise our IP
            url = url.replace("127.0.0.1", await self.node_ip())
        self._url = url
        self.server.on_engine_death(self._restart)
        return url

    async def _restart(self) -> None:
        """Called once the engine has died and the HTTP server has stopped: end this process so
        that Ray starts the replica afresh (counted against `max_restarts`)."""
        log.error("rollout replica: the vLLM engine died; asking Ray to restart this replica")
        ray.kill(ray.get_runtime_context().current_actor, no_restart=False)

    async def _unless_engine_died(self) -> None:
        """With a dead engine, wait for the restart (`_restart` ends this process) instead of
        answering for a replica that can no longer serve."""
        if self.server.service.engine_dead:
            await asyncio.Event().wait()

    async def url(self) -> str | None:
        return self._url

    async def load_adapter(self, update: AdapterUpdate) -> AdapterInfo:
        await self.start()  # a restarted replica loads its engine first
        try:
            return await self.server.service.load_adapter_update(update)
        except RequestError:
            await self._unless_engine_died()  # died during the load: the caller retries after the restart
            raise

    async def forget_adapter(self, name: str) -> list[int]:
        """Unload every version of `name` (a resumed run re-publishes from its checkpoint)."""
        await self.start()
        try:
            return await self.server.service.adapters.unload(name, None)
        except RequestError as error:
            if error.status == 404:
                return []
            raise

    async def adapters(self) -> list[AdapterInfo]:
        await self.start()
        return self.server.service.adapters.listing()

    async def node_ip(self) -> str:
        return ray.util.get_node_ip_address()

    async def stop(self) -> None:
        await self.server.stop()

    async def stats(self) -> dict[str, Any]:
        service = self.server.service
        return {
            "swaps": len(service.adapters.swap_seconds),
            "swap_seconds": list(service.adapters.swap_seconds),
            "adapters": [info.model_dump() for info in service.adapters.listing()],
        }
