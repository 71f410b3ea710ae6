"""A local stand-in for Chert's Messaging API, for rehearsals and tests.

``SandboxModel`` holds the behaviour (plain Python), ``create_app`` wraps it in starlette,
and ``SandboxServer`` serves it with uvicorn on a loopback port in a background thread.
``CapacityLimits`` is its own model of Chert's first-touch capacity. The sandbox stands
beside the product: it imports nothing from chertcast outside this package, and the product
imports it only where the CLI wires ``sandbox`` and ``send --sandbox``.
"""

from chertcast.sandbox.app import create_app, sandbox_transport
from chertcast.sandbox.capacity import CapacityLimits
from chertcast.sandbox.model import (
    DEFAULT_LINES,
    DEFAULT_SECRET,
    Delivery,
    Faults,
    SandboxConfig,
    SandboxModel,
)
from chertcast.sandbox.server import SandboxServer

__all__ = [
    "DEFAULT_LINES",
    "DEFAULT_SECRET",
    "CapacityLimits",
    "Delivery",
    "Faults",
    "SandboxConfig",
    "SandboxModel",
    "SandboxServer",
    "create_app",
    "sandbox_transport",
]
