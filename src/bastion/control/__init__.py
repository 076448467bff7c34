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

from bastion.control._api import ApiServer, RateLimiter, events_page
from bastion.control._files import UpFiles
from bastion.control._openapi import document
from bastion.control._tokens import Tokens, make_token
from bastion.control._up import Up, down, status

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
