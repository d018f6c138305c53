"""A local HTTP mirror: a folder served on 127.0.0.1 while a ``with`` block runs.

::

    with serve(Path("data/rehearsal/mirror/kits")) as url:   # "http://127.0.0.1:<port>"
        subprocess.run([..., "download_datasets.py", "--base-url", url, ...])

The standard library's ``ThreadingHTTPServer`` with ``SimpleHTTPRequestHandler`` (GET and HEAD
of the folder's files; no ``Range`` support, so a resumed download restarts from byte 0, which
``sam3d.data.download.download_file`` handles) on a free port, in a daemon thread, request
logging silenced. Only the loopback interface is bound: nothing outside the machine can reach it.
"""

from __future__ import annotations

import functools
import threading
from collections.abc import Iterator
from contextlib import contextmanager
from http.server import SimpleHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path

HOST = "127.0.0.1"


class QuietHandler(SimpleHTTPRequestHandler):
    """``SimpleHTTPRequestHandler`` that does not log every request to stderr."""

    def log_message(self, format, *args):
        pass


@contextmanager
def serve(folder: str | Path) -> Iterator[str]:
    """Serve ``folder`` over HTTP on ``127.0.0.1`` (a free port) while the block runs.

    Yields the base URL ``http://127.0.0.1:<port>`` (no trailing slash): the file
    ``folder/a/b.tar`` is at ``<url>/a/b.tar``. The server is shut down and its socket closed
    when the block ends, also on an exception.

    Raises:
        FileNotFoundError: ``folder`` is not a directory.
    """
    folder = Path(folder)
    if not folder.is_dir():
        raise FileNotFoundError(f"{folder}: no such folder to serve")
    handler = functools.partial(QuietHandler, directory=str(folder.resolve()))
    httpd = ThreadingHTTPServer((HOST, 0), handler)
    httpd.daemon_threads = True
    thread = threading.Thread(target=httpd.serve_forever, kwargs={"poll_interval": 0.05},
                              name=f"sam3d-mirror-{httpd.server_address[1]}", daemon=True)
    thread.start()
    try:
        yield f"http://{HOST}:{httpd.server_address[1]}"
    finally:
        httpd.shutdown()
        httpd.server_close()
        thread.join(timeout=5)
