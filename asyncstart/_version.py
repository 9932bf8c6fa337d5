"""Versions: the package's, and the Docker Engine API versions it speaks (server and client)."""

__version__ = "0.1.0"

#: The Engine API version served (Docker 28.x) and the oldest one accepted, as dockerd.
API_VERSION = "1.51"
MIN_API_VERSION = "1.24"
