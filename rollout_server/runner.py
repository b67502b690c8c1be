"""Running the app: as a blocking process (`cxr-rl serve`) or inside a running event loop (the Ray
actor), on a given port or a free one. Either way a dead vLLM engine takes the server down: the
process exits with status 1 (for its supervisor to restart), the actor asks Ray to restart it."""

import asyncio
import contextlib
import logging
import os
from collections.abc import Awaitable, Callable
from typing import Any

import uvicorn

from rollout_server.app import create_app
from rollout_server.config import ServerConfig
from rollout_server.service import RolloutService

log = logging.getLogger("cxr_rl.rollout_server")
ENGINE_POLL_S = 0.5
GRACEFUL_SHUTDOWN_S = 30  # requests in flight get their answer (a 503 once the engine is dead)


async def watch_engine(service: RolloutService, on_death: Callable[[], Awaitable[None]]) -> None:
    """Await `on_death()` once the engine has died. vLLM notices its engine core's death at once
    (every request in flight then fails, as would every later one) but keeps the server up."""
    while not service.engine_dead:
        await asyncio.sleep(ENGINE_POLL_S)
    log.error("the vLLM engine died; /ready and /health now answer 503")
    await on_death()


def serve_forever(config: ServerConfig) -> int:
    """Serve until stopped (exit status 0) or until the engine dies (1). vLLM's own switch
    `VLLM_KEEP_ALIVE_ON_ENGINE_DEATH=1` keeps a server with a dead engine up, answering 503."""
    service = RolloutService(config)
    server = ProcessServer(
        service,
        uvicorn.Config(
            create_app(service),
            host=config.host,
            port=config.port,
            log_level="info",
            timeout_graceful_shutdown=GRACEFUL_SHUTDOWN_S,
        ),
    )
    server.run()  # uvicorn's own event loop (uvloop where installed) and signal handling
    return 1 if server.engine_died else 0


class ProcessServer(uvicorn.Server):
    """uvicorn's server, plus a watchdog that stops it once the engine has died."""

    def __init__(self, service: RolloutService, config: uvicorn.Config):
        super().__init__(config)
        self.service = service
        self.engine_died = False

    async def serve(self, sockets: Any = None) -> None:
        keep_alive = os.environ.get("VLLM_KEEP_ALIVE_ON_ENGINE_DEATH", "0") not in ("", "0")
        watchdog = None if keep_alive else asyncio.create_task(watch_engine(self.service, self._stop))
        try:
            await super().serve(sockets)
        finally:
            if watchdog is not None:
                watchdog.cancel()

    async def _stop(self) -> None:
        self.engine_died = True
        log.error("stopping the server (exit status 1) so that its supervisor restarts it")
        self.should_exit = True  # requests in flight get their answer (503) first


class EmbeddedServer:
    """The HTTP server as a task of the caller's event loop."""

    def __init__(self, config: ServerConfig):
        self.service = RolloutService(config)
        self.config = config
        self._server: uvicorn.Server | None = None
        self._task: asyncio.Task | None = None
        self._watchdog: asyncio.Task | None = None
        self.port: int | None = None

    @property
    def url(self) -> str:
        host = "127.0.0.1" if self.config.host in ("0.0.0.0", "::") else self.config.host
        return f"http://{host}:{self.port}"

    async def start(self) -> str:
        app = create_app(self.service)
        self._server = uvicorn.Server(
            uvicorn.Config(
                app,
                host=self.config.host,
                port=self.config.port,
                log_level="warning",
                lifespan="on",
                timeout_graceful_shutdown=GRACEFUL_SHUTDOWN_S,
            )
        )
        # Inside a Ray actor the process's signals belong to Ray, not to this server.
        self._server.capture_signals = contextlib.nullcontext
        self._task = asyncio.create_task(self._server.serve())
        while not self._server.started:
            if self._task.done():
                self._task.result()
                raise RuntimeError("HTTP server stopped during start-up")
            await asyncio.sleep(0.05)
        self.port = self._server.servers[0].sockets[0].getsockname()[1]
        return self.url

    def on_engine_death(self, callback: Callable[[], Awaitable[None]]) -> None:
        """Stop serving once the engine has died (requests in flight get their 503 first), then
        await `callback()`."""

        async def stop_then_callback() -> None:
            await self.stop()
            await callback()

        self._watchdog = asyncio.create_task(watch_engine(self.service, stop_then_callback))

    async def wait_ready(self, timeout_s: float = 600.0) -> None:
        deadline = asyncio.get_running_loop().time() + timeout_s
        while not self.service.ready:
            if self.service.startup_error:
                raise RuntimeError(f"engine failed to start: {self.service.startup_error}")
            if asyncio.get_running_loop().time() > deadline:
                raise TimeoutError(f"engine not ready after {timeout_s:.0f} s")
            await asyncio.sleep(0.1)

    async def stop(self) -> None:
        if self._watchdog is not None and self._watchdog is not asyncio.current_task():
            self._watchdog.cancel()  # a deliberate stop, not a death
        if self._server is not None:
            self._server.should_exit = True
            if self._task is not None:
                await self._task
        log.info("server stopped")
