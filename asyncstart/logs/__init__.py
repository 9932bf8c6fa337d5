"""Container logs: dockerd's json-file format, written by the runtime, read by ``docker logs``."""

from .jsonfile import MAX_LINE, ContainerLogs, JsonFileWriter, check_arguments, read_log

__all__ = ["MAX_LINE", "ContainerLogs", "JsonFileWriter", "check_arguments", "read_log"]
