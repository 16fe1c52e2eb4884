"""A local HTTP server on 127.0.0.1 for the downloader tests, and archives in the official shapes."""

import io
import re
import sys
import tarfile
import threading
import time
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

from PIL import Image


def jpeg(size, colour):
    buffer = io.BytesIO()
    Image.new("RGB", size, colour).save(buffer, format="JPEG")
    return buffer.getvalue()


def tar_bytes(files, mode="w:gz"):
    """A tar (``mode`` "w" or "w:gz") of ``{member name: bytes}``, folders included as official archives have them."""
    buffer = io.BytesIO()
    with tarfile.open(fileobj=buffer, mode=mode) as tar:
        folders = sorted({name.rsplit("/", 1)[0] for name in files if "/" in name})
        for folder in folders:
            info = tarfile.TarInfo(folder)
            info.type = tarfile.DIRTYPE
            tar.addfile(info)
        for name, data in files.items():
            info = tarfile.TarInfo(name)
            info.size = len(data)
            tar.addfile(info, io.BytesIO(data))
    return buffer.getvalue()


def tgz(files):
    return tar_bytes(files, "w:gz")


class _QuietServer(ThreadingHTTPServer):
    """Says nothing when a client drops the connection mid-response, as the interruption tests make them do."""

    def handle_error(self, request, client_address):
        if not isinstance(sys.exc_info()[1], ConnectionError):
            super().handle_error(request, client_address)


class Server:
    """Serves ``files`` (URL path with its query -> bytes) with Range support; records ``(path, Range header)``.

    ``ignore_range`` makes it answer 200 with the whole file, as servers without Range support do.
    ``cut[path] = n`` makes the next response for ``path`` stop after n body bytes and drop the connection.
    ``fail[path] = code`` makes every response for ``path`` that HTTP error.
    ``slow[path] = s`` makes responses for ``path`` pause ``s`` seconds after each 16 KiB.
    ``answer[path] = (status, headers, body)`` makes every response for ``path`` that one, as given.
    ``endless`` (a set of paths): their responses are 200 with no length and a body that never ends.
    """

    def __init__(self, files):
        self.files, self.requests, self.cut, self.fail, self.ignore_range = files, [], {}, {}, False
        self.slow, self.answer, self.endless = {}, {}, set()
        server = self

        class Handler(BaseHTTPRequestHandler):
            def do_GET(self):
                data, asked = server.files.get(self.path), self.headers.get("Range")
                server.requests.append((self.path, asked))
                if self.path in server.answer or self.path in server.endless:
                    self.send_as_told()
                    return
                if data is None or self.path in server.fail:
                    self.send_error(server.fail.get(self.path, 404))
                    return
                start = int(re.fullmatch(r"bytes=(\d+)-", asked).group(1)) if asked and not server.ignore_range else 0
                if start >= len(data) > 0:
                    self.send_response(416)
                    self.send_header("Content-Range", f"bytes */{len(data)}")
                    self.send_header("Content-Length", "0")
                    self.end_headers()
                    return
                self.send_response(206 if start else 200)
                if start:
                    self.send_header("Content-Range", f"bytes {start}-{len(data) - 1}/{len(data)}")
                self.send_header("Content-Length", str(len(data) - start))
                self.send_header("Content-Type", "application/octet-stream")
                self.end_headers()
                body = data[start:start + server.cut.pop(self.path, len(data))]
                pause = server.slow.get(self.path)
                step = 1 << 14 if pause else max(len(body), 1)
                for offset in range(0, len(body), step):
                    self.wfile.write(body[offset:offset + step])
                    if pause:
                        time.sleep(pause)

            def send_as_told(self):
                status, headers, body = server.answer.get(self.path, (200, {}, b""))
                self.send_response(status)
                for name, value in headers.items():
                    self.send_header(name, value)
                self.end_headers()
                self.wfile.write(body)
                block = bytes(1 << 16)
                while self.path in server.endless:  # until the client hangs up (ConnectionError: quiet)
                    self.wfile.write(block)

            def log_message(self, *args):
                pass

        self.httpd = _QuietServer(("127.0.0.1", 0), Handler)
        self.url = f"http://127.0.0.1:{self.httpd.server_address[1]}"
        self.thread = threading.Thread(target=self.httpd.serve_forever, args=(0.01,), daemon=True)
        self.thread.start()

    def close(self):
        self.httpd.shutdown()
        self.httpd.server_close()
