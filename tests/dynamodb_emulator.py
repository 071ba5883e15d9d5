"""The DynamoDB emulator Mesh's tests run against: moto's server, one request at a time.

Usage: python3 tests/dynamodb_emulator.py HOST PORT

moto's own `moto_server` runs requests on concurrent threads, and its TransactWriteItems
restores whole tables from a copy taken before the transaction when any part of it fails, which
silently undoes writes other threads made in the meantime (a hard-cap reservation refused while
another request settles loses that settlement). Real DynamoDB isolates transactions; serving one
request at a time gives the emulator the same guarantee. Connections are still accepted on
threads, so keep-alive clients never block each other.
"""

import signal
import sys
import threading

from moto.moto_server.werkzeug_app import DomainDispatcherApplication, create_backend_app
from werkzeug.serving import run_simple


def main() -> None:
    host, port = sys.argv[1], int(sys.argv[2])
    app = DomainDispatcherApplication(create_backend_app)
    one_at_a_time = threading.Lock()

    def serialized(environ, start_response):
        with one_at_a_time:
            return [b"".join(app(environ, start_response))]

    signal.signal(signal.SIGTERM, lambda *_: sys.exit(0))
    run_simple(host, port, serialized, threaded=True, use_reloader=False)


if __name__ == "__main__":
    main()
