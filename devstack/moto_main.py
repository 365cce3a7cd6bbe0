"""``python -m moto.server``, made cheaper; run by :class:`devstack.moto_server.MotoServer`.

Two things moto 5.2 does on every request that change nothing here, and cost CPU that the
server takes from the function and training when all share two cores:

* it lists its own package folder (``os.listdir`` and ~190 ``stat`` calls) to route the
  request (``moto.backends.list_of_moto_modules``); that folder cannot change while the
  server runs, so the list is taken once (a third less server CPU per S3 GET, profiled);
* werkzeug logs an access line per request (10% of the server's busy time under the
  throughput benchmark, py-spy); the parent discards its output anyway.
"""

from __future__ import annotations

import logging

import moto.backends
from moto import server

_MODULES = tuple(moto.backends.list_of_moto_modules())


def _modules() -> tuple[str, ...]:
    return _MODULES


if __name__ == "__main__":
    moto.backends.list_of_moto_modules = _modules
    logging.getLogger("werkzeug").setLevel(logging.WARNING)
    server.main()
