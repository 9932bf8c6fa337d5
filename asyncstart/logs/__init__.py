"""Container logs: dockerd's json-file format, written (and rotated) by the runtime, read by
``docker logs`` (as is conmon's k8s-file, which containers monitored by conmon write); the
driver's options, checked at create."""

from .jsonfile import LOG_MODE, MAX_LINE, ContainerLogs, JsonFileWriter, LogQuery
from .options import LogOptions, LogSource, check_log_options, log_options
from .reader import read_log, read_log_chunks

__all__ = [
    "LOG_MODE",
    "MAX_LINE",
    "ContainerLogs",
    "JsonFileWriter",
    "LogOptions",
    "LogQuery",
    "LogSource",
    "check_log_options",
    "log_options",
    "read_log",
    "read_log_chunks",
]
