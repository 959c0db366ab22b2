"""A real S3-compatible server for the data tests: moto's server on 127.0.0.1, behind a proxy that injects faults.

The proxy forwards every request to moto unless told otherwise: `fail_next(n)` answers the next n object reads
with 500 InternalError (which s3fs does not retry itself: the scheduler's retries are what is tested), `drop_next(n)` cuts the next n object reads after part of the body, `outage_after(n, s)`
stops the moto server after n more object reads and starts it again (same port, same data) s seconds later.
"""

from __future__ import annotations

import http.client
import logging
import threading
import time
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

import pytest

moto_server = pytest.importorskip("moto.server")
boto3 = pytest.importorskip("boto3")
pytest.importorskip("s3fs")


class FaultyS3:
    def __init__(self) -> None:
        logging.getLogger("werkzeug").setLevel(logging.ERROR)
        self.moto = moto_server.ThreadedMotoServer(ip_address="127.0.0.1", port=0, verbose=False)
        self.moto.start()
        self.moto_port = self.moto.get_host_and_port()[1]
        self.lock = threading.Lock()
        self.fail = self.drop = 0
        self.outage: tuple[int, float] | None = None
        self.reads = 0
        self.faults: list[str] = []
        self.proxy = ThreadingHTTPServer(("127.0.0.1", 0), self._handler())
        self.proxy.daemon_threads = True
        threading.Thread(target=self.proxy.serve_forever, daemon=True).start()
        self.endpoint = f"http://127.0.0.1:{self.proxy.server_address[1]}"

    def client(self):
        return boto3.client(
            "s3",
            endpoint_url=self.endpoint,
            aws_access_key_id="test",
            aws_secret_access_key="test",
            region_name="us-east-1",
        )

    def fail_next(self, n: int) -> None:
        with self.lock:
            self.fail = n

    def drop_next(self, n: int) -> None:
        with self.lock:
            self.drop = n

    def outage_after(self, reads: int, seconds: float) -> None:
        with self.lock:
            self.outage = (reads, seconds)

    def _restart_later(self, seconds: float) -> None:
        self.moto.stop()
        self.faults.append("stopped")

        def restart() -> None:
            time.sleep(seconds)
            self.moto = moto_server.ThreadedMotoServer(ip_address="127.0.0.1", port=self.moto_port, verbose=False)
            self.moto.start()
            self.faults.append("restarted")

        threading.Thread(target=restart, daemon=True).start()

    def close(self) -> None:
        self.proxy.shutdown()
        self.moto.stop()

    def _handler(self):
        server = self

        class Handler(BaseHTTPRequestHandler):
            protocol_version = "HTTP/1.1"

            def log_message(self, *args) -> None:
                pass

            def _forward(self) -> None:
                body = self.rfile.read(int(self.headers.get("Content-Length") or 0))
                is_read = self.command == "GET" and "list-type" not in self.path and self.path.count("/") >= 2
                action = None
                with server.lock:
                    if is_read:
                        server.reads += 1
                        if server.fail:
                            server.fail -= 1
                            action = "503"
                        elif server.drop:
                            server.drop -= 1
                            action = "drop"
                        elif server.outage is not None:
                            left, seconds = server.outage
                            server.outage = (left - 1, seconds) if left > 1 else None
                            if left <= 1:
                                server._restart_later(seconds)
                if action == "503":
                    server.faults.append("500")
                    payload = b"<Error><Code>InternalError</Code><Message>injected</Message></Error>"
                    self.send_response(500)
                    self.send_header("Content-Length", str(len(payload)))
                    self.end_headers()
                    self.wfile.write(payload)
                    return
                try:
                    conn = http.client.HTTPConnection("127.0.0.1", server.moto_port, timeout=30)
                    headers = {k: v for k, v in self.headers.items() if k.lower() != "host"}
                    headers["Host"] = f"127.0.0.1:{server.moto_port}"
                    conn.request(self.command, self.path, body=body, headers=headers)
                    response = conn.getresponse()
                    data = response.read()
                except OSError:  # moto is down: the client sees a dropped connection
                    server.faults.append("refused")
                    self.close_connection = True
                    self.connection.close()
                    return
                self.send_response(response.status)
                for key, value in response.getheaders():
                    if key.lower() not in ("transfer-encoding", "connection", "server", "date"):
                        self.send_header(key, value)
                self.end_headers()
                if action == "drop":
                    server.faults.append("drop")
                    self.wfile.write(data[: len(data) // 3])
                    self.wfile.flush()
                    self.close_connection = True
                    self.connection.shutdown(2)
                    return
                self.wfile.write(data)

            do_GET = do_PUT = do_POST = do_HEAD = do_DELETE = _forward

        return Handler
