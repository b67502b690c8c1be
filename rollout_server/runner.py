"""Running the app: as a blocking process (`cxr-rl serve`) or inside a running event loop (the Ray
actor), on a given port or a free one."""

import asyncio
import contextlib
import logging

import uvicorn

from rollout_server.app import create_app
from rollout_server.config import ServerConfig
from rollout_server.service import RolloutService


def serve_forever(config: ServerConfig) -> None:
    service = RolloutService(config)
    uvicorn.run(
        create_app(service),
        host=config.host,
        port=config.port,
        log_level="info",
        timeout_graceful_shutdown=30,
    )


class EmbeddedServer:
    """The HTTP server as a task of the caller's event loop."""

    def __init__(self, config: ServerConfig):
        self.service = RolloutService(config)
        self.config = config
        self._server: uvicorn.Server | None = None
        self._task: asyncio.Task | None = None
        self.port: int | None = None

    @property
    def url(self) -> str:
        host = "127.0.0.1" if self.config.host in ("0.0.0.0", "::") else self.config.host
        return f"http://{host}:{self.port}"

    async def start(self) -> str:
        app = create_app(self.service)
        self._server = uvicorn.Server(
            uvicorn.Config(
                app, host=self.config.host, port=self.config.port, log_level="warning", lifespan="on"
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

    async def wait_ready(self, timeout_s: float = 600.0) -> None:
        deadline = asyncio.get_running_loop().time() + timeout_s
        while not self.service.ready:
            if self.service.startup_error:
                raise RuntimeError(f"engine failed to start: {self.service.startup_error}")
            if asyncio.get_running_loop().time() > deadline:
                raise TimeoutError(f"engine not ready after {timeout_s:.0f} s")
            await asyncio.sleep(0.1)

    async def stop(self) -> None:
        if self._server is not None:
            self._server.should_exit = True
            if self._task is not None:
                await self._task
        logging.getLogger("cxr_rl.rollout_server").info("server stopped")
