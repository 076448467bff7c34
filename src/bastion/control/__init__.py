"""The control plane: ``bastion up`` runs everything the manifest declares under one
supervision tree, and serves the control API beside it (docs/control-plane.md).

    from bastion.control import Up, down, status

    up = Up(load("bastion.yaml"))
    up.start()            # adopts children a killed `bastion up` left running
    up.wait_ready()       # every gateway answers /healthz
    up.serve_forever()    # SIGTERM stops it all, SIGHUP reloads the manifest

- ``Up``: the control process (``_up``); ``status(manifest)`` and ``down(manifest)``
  work from the files under ``<state_dir>/up/``, whether ``bastion up`` runs or not.
- ``ApiServer``: the HTTP API (``_api``), its OpenAPI document (``_openapi``).
- ``make_token`` / ``Tokens``: API bearer tokens, stored hashed (``_tokens``).

Must never: run a second copy of a child that runs, or change state on an unauthenticated
or cross-origin call.
"""

from typing import TYPE_CHECKING

from bastion._lazy import lazy

if TYPE_CHECKING:
    from bastion.control._api import ApiServer, RateLimiter, events_page
    from bastion.control._files import UpFiles
    from bastion.control._openapi import document
    from bastion.control._tokens import Tokens, make_token
    from bastion.control._up import Up, down, status

# Imported when first named: `bastion serve` (each gateway `bastion up` runs) reads only
# _files, and `bastion up` starts its children before it imports the API (aiohttp).
__getattr__, __dir__ = lazy(
    __name__,
    {
        "ApiServer": "bastion.control._api",
        "RateLimiter": "bastion.control._api",
        "events_page": "bastion.control._api",
        "UpFiles": "bastion.control._files",
        "document": "bastion.control._openapi",
        "Tokens": "bastion.control._tokens",
        "make_token": "bastion.control._tokens",
        "Up": "bastion.control._up",
        "down": "bastion.control._up",
        "status": "bastion.control._up",
    },
)

__all__ = [
    "ApiServer",
    "RateLimiter",
    "Tokens",
    "Up",
    "UpFiles",
    "document",
    "down",
    "events_page",
    "make_token",
    "status",
]
