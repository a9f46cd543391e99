"""A real S3 server on loopback for the tests and benchmarks/chaos.py (moto's, from the test extra)."""
from __future__ import annotations


class S3Server:
    """A real S3 server (moto's) on 127.0.0.1, in this process: its buckets outlive `stop()` / `start()`,
    so a test can take the endpoint away for a while and bring it back on the same port.

    moto 5.2 names the root of its CompleteMultipartUpload answer `...Response`; the AWS SDK inside
    pyarrow reads that as an error hidden in a 200 (every upload over one part fails), so the root is
    renamed `...Result`, as S3 sends it."""

    def __init__(self) -> None:
        self.port = 0
        self._server = None
        self._thread = None

    @staticmethod
    def _app():
        from moto.moto_server.werkzeug_app import DomainDispatcherApplication, create_backend_app

        moto_app = DomainDispatcherApplication(create_backend_app)

        def app(environ, start_response):
            if environ.get("REQUEST_METHOD") != "POST" or "uploadId" not in environ.get("QUERY_STRING", ""):
                return moto_app(environ, start_response)
            captured = {}

            def capture(status, headers, exc_info=None):
                captured["status"], captured["headers"] = status, headers

            body = b"".join(moto_app(environ, capture))
            body = body.replace(b"CompleteMultipartUploadResponse", b"CompleteMultipartUploadResult")
            headers = [(k, v) for k, v in captured["headers"] if k.lower() != "content-length"]
            start_response(captured["status"], headers + [("Content-Length", str(len(body)))])
            return [body]

        return app

    def start(self) -> None:
        import threading

        from werkzeug.serving import WSGIRequestHandler, make_server

        class QuietHandler(WSGIRequestHandler):
            def log_request(self, *args, **kwargs) -> None:  # one line per request otherwise
                pass

        self._server = make_server("127.0.0.1", self.port, self._app(), threaded=True, request_handler=QuietHandler)
        self.port = self._server.server_port
        self._thread = threading.Thread(target=self._server.serve_forever, daemon=True)
        self._thread.start()

    def stop(self) -> None:
        self._server.shutdown()
        self._server.server_close()
        self._thread.join()

    @property
    def endpoint(self) -> str:
        return f"127.0.0.1:{self.port}"

    def uri(self, bucket: str, prefix: str = "") -> str:
        path = f"{bucket}/{prefix}".rstrip("/")
        return f"s3://{path}?endpoint_override={self.endpoint}&scheme=http&region=us-east-1"

    def make_bucket(self, name: str) -> None:
        import pyarrow.fs as pafs

        fs = pafs.S3FileSystem(endpoint_override=self.endpoint, scheme="http", region="us-east-1",
                               allow_bucket_creation=True)
        fs.create_dir(name)
