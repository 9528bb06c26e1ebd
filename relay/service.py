"""Running an aiohttp service the hushcc way (DESIGN.md "Service conventions").

Not pure (sockets, signals). `run_service` binds, prints exactly one line
`listening on http://HOST:PORT` to stdout once the socket accepts connections, waits for SIGTERM
or SIGINT, then drains: the listening socket closes first, in-flight requests get
`shutdown_timeout` seconds to finish, and the function returns (the command exits 0).
aiohttp's own server log (which names peer addresses) is silenced.
A `site_factory` lets a service wrap the listening socket (the relay's receipt deadline).
"""

from __future__ import annotations

import asyncio
import logging
import signal
from typing import TYPE_CHECKING

from aiohttp import web

if TYPE_CHECKING:
    from collections.abc import Callable


def _tcp_site(runner: web.AppRunner, host: str, port: int) -> web.BaseSite:
    return web.TCPSite(runner, host, port)


async def serve_until(app: web.Application, host: str, port: int, stop: asyncio.Event, *,  # noqa: PLR0913
                      site_factory: Callable[[web.AppRunner, str, int], web.BaseSite] = _tcp_site,
                      shutdown_timeout: float = 10.0) -> None:
    """Serve `app` on host:port, print the ready line, and drain once `stop` is set."""
    runner = web.AppRunner(app, access_log=None, shutdown_timeout=shutdown_timeout)
    await runner.setup()
    try:
        site = site_factory(runner, host, port)
        await site.start()
        addresses = runner.addresses
        bound = addresses[0][1] if addresses else port
        print(f"listening on http://{host}:{bound}", flush=True)  # noqa: T201 - the ready line
        await stop.wait()
    finally:
        await runner.cleanup()


def run_service(app: web.Application, host: str, port: int, *,
                site_factory: Callable[[web.AppRunner, str, int], web.BaseSite] = _tcp_site,
                ) -> int:
    """Run `app` until SIGTERM / SIGINT; return the exit status 0 after draining."""
    # aiohttp's server log names the peer's address on protocol errors; the services log only
    # their own allowlisted lines.
    logging.getLogger("aiohttp.server").setLevel(logging.CRITICAL + 1)

    async def main() -> None:
        stop = asyncio.Event()
        loop = asyncio.get_running_loop()
        for sig in (signal.SIGTERM, signal.SIGINT):
            loop.add_signal_handler(sig, stop.set)
        await serve_until(app, host, port, stop, site_factory=site_factory)

    asyncio.run(main())
    return 0
