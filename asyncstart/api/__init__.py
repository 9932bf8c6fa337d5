"""The Docker Engine API: HTTP (h11 on anyio streams) in front of :class:`~asyncstart.Daemon`.

``http`` is the protocol layer (no Docker in it), ``engine`` the routes and their JSON, and
``server`` the listeners and graceful shutdown.
"""

from .._version import API_VERSION, MIN_API_VERSION
from .engine import EngineAPI
from .server import ApiServer, Host, parse_host, serve_api

__all__ = [
    "API_VERSION",
    "MIN_API_VERSION",
    "ApiServer",
    "EngineAPI",
    "Host",
    "parse_host",
    "serve_api",
]
