"""bindpool: outbound TCP connections from chosen source IPs without the source-port wall.

Binding a source IP before connect() makes the kernel pick the source port without knowing
the destination, so every destination shares ~28k ports per source IP. TCP only needs the
4-tuple to be unique: bindpool picks, per destination, a port not in use for it.

    async with bindpool.Pool(["192.0.2.7"]) as pool:
        reader, writer = await pool.open_connection("example.com", 80)
"""

from bindpool._errors import (
    BindPoolError,
    ConfigurationError,
    PoolClosed,
    PortsExhausted,
    SourceUnavailable,
)
from bindpool._pool import Pool
from bindpool._socket import PooledSocket
from bindpool._types import Lease, PoolStatistics, SourceStatistics

__all__ = [
    # the pool and what it hands out
    "Pool",
    "PooledSocket",
    "Lease",
    # introspection
    "PoolStatistics",
    "SourceStatistics",
    # errors
    "BindPoolError",
    "ConfigurationError",
    "PoolClosed",
    "PortsExhausted",
    "SourceUnavailable",
]

__version__ = "0.1.0"  # the one place it is written: pyproject.toml reads it from here

# Tracebacks, reprs and the API reference name a public class by its `__module__`: make it
# `bindpool.PortsExhausted`, where users import it from, not `bindpool._errors.PortsExhausted`.
# Pickling still works: pickle finds the class as `bindpool.<name>`.
for _name in __all__:
    globals()[_name].__module__ = __name__
del _name
