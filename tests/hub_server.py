"""A loopback HTTP server that speaks the Hugging Face Hub's download protocol, for `gsv models fetch` tests.

HEAD/GET `/{repo}/resolve/{revision}/{path}` answer with the headers huggingface_hub reads (X-Repo-Commit, ETag and
X-Linked-Etag, X-Linked-Size, Content-Length, Accept-Ranges) and honour `Range: bytes=N-` with 206. Switches let a
test cut the first GET of a file short (the connection closes mid-body) or serve altered bytes under the right
etag. Every request is logged as (method, path, Range header).
"""

from __future__ import annotations

import hashlib
import threading
import urllib.parse
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer


def git_blob_id(data: bytes) -> str:
    return hashlib.sha1(f"blob {len(data)}\0".encode() + data).hexdigest()  # noqa: S324


class HubServer:
    def __init__(self, repo: str, files: dict[str, bytes], commit: str = "c" * 40, lfs_min: int = 1024) -> None:
        self.repo, self.files, self.commit, self.lfs_min = repo, dict(files), commit, lfs_min
        self.requests: list[tuple[str, str, str | None]] = []
        self.cut_first_get: dict[str, int] = {}  # path -> bytes sent before the first GET's connection drops
        self.corrupt: set[str] = set()  # paths served with one byte flipped (same size, same etag)
        self.bytes_sent = 0
        self._lock = threading.Lock()
        server = self

        class Handler(BaseHTTPRequestHandler):
            protocol_version = "HTTP/1.1"

            def log_message(self, *args):  # keep test output quiet
                pass

            def do_HEAD(self):
                self._serve(body=False)

            def do_GET(self):
                self._serve(body=True)

            def _serve(self, body: bool) -> None:
                path = urllib.parse.urlparse(self.path).path
                with server._lock:
                    server.requests.append((self.command, urllib.parse.unquote(path), self.headers.get("Range")))
                prefix = f"/{server.repo}/resolve/"
                if not path.startswith(prefix):
                    return self._status(404, "Repository Not Found", {"X-Error-Code": "RepoNotFound"})
                _rev, _, name = path[len(prefix):].partition("/")
                name = urllib.parse.unquote(name)
                if name not in server.files:
                    return self._status(404, "Entry not found", {"X-Error-Code": "EntryNotFound"})
                data = server.files[name]
                etag = hashlib.sha256(data).hexdigest() if len(data) >= server.lfs_min else git_blob_id(data)
                if name in server.corrupt:
                    data = bytes([data[0] ^ 0xFF]) + data[1:]
                start = 0
                rng = self.headers.get("Range")
                if body and rng and rng.startswith("bytes="):
                    start = int(rng[6:].split("-")[0])
                self.send_response(206 if start else 200)
                self.send_header("X-Repo-Commit", server.commit)
                self.send_header("ETag", f'"{etag}"')
                if len(server.files[name]) >= server.lfs_min:
                    self.send_header("X-Linked-Etag", f'"{etag}"')
                    self.send_header("X-Linked-Size", str(len(data)))
                self.send_header("Accept-Ranges", "bytes")
                self.send_header("Content-Length", str(len(data) - start))
                if start:
                    self.send_header("Content-Range", f"bytes {start}-{len(data) - 1}/{len(data)}")
                self.end_headers()
                if not body:
                    return
                payload = data[start:]
                with server._lock:
                    cut = server.cut_first_get.pop(name, None)
                if cut is not None:
                    payload = payload[:cut]
                self.wfile.write(payload)
                self.wfile.flush()
                with server._lock:
                    server.bytes_sent += len(payload)
                if cut is not None:
                    self.close_connection = True
                    self.connection.shutdown(2)  # the client sees the body end early

            def _status(self, code: int, message: str, headers: dict[str, str]) -> None:
                raw = message.encode()
                self.send_response(code)
                for k, v in headers.items():
                    self.send_header(k, v)
                self.send_header("Content-Length", str(len(raw)))
                self.end_headers()
                if self.command != "HEAD":
                    self.wfile.write(raw)

        self.httpd = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.httpd.daemon_threads = True
        self.url = f"http://127.0.0.1:{self.httpd.server_address[1]}"
        self._thread = threading.Thread(target=self.httpd.serve_forever, daemon=True)

    def gets(self, name: str) -> list[str | None]:
        """The Range header of every GET of `name` (None for a plain GET)."""
        return [r for m, p, r in self.requests if m == "GET" and p.endswith("/" + name)]

    def __enter__(self) -> HubServer:
        self._thread.start()
        return self

    def __exit__(self, *exc) -> None:
        self.httpd.shutdown()
        self.httpd.server_close()
