#!/usr/bin/env python3
"""Serve a folder (the repo root by default) on 127.0.0.1 for the web demo and the browser tests.

The page at web-demo/ imports ../wasm/pkg/index.js, so the root must contain both folders; serving
the repo root keeps `make demo` and the tests on the same layout as the source tree, with no copy step.
Why not plain `python -m http.server`: it guesses .mjs/.wasm types from the OS's mime table (browsers
refuse to compile wasm streamed with the wrong type), binds every interface, and lets the browser cache
an old model after retraining. This one fixes those three and nothing else.

    python scripts/serve.py                 # http://127.0.0.1:8000/web-demo/
    python scripts/serve.py --port 0        # any free port (also used when 8000 is taken); the first line printed is the URL
    python scripts/serve.py --root DIR --path /   # serve another folder (the Vite test's dist/)
"""
import argparse
import errno
import functools
import signal
import sys
from http.server import SimpleHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path

REPO = Path(__file__).resolve().parent.parent

TYPES = {
    ".wasm": "application/wasm",
    ".js": "text/javascript",
    ".mjs": "text/javascript",
    ".json": "application/json",
    ".onnx": "application/octet-stream",
    ".css": "text/css",
    ".svg": "image/svg+xml",
    ".map": "application/json",
}


class Handler(SimpleHTTPRequestHandler):
    extensions_map = {**SimpleHTTPRequestHandler.extensions_map, **TYPES}
    quiet = False
    landing = "/web-demo/"

    def _redirect_bare(self):
        # The bare address lands on the demo, so the URL a person types can be short.
        if self.path in ("", "/") and self.landing != "/":
            self.send_response(302)
            self.send_header("Location", self.landing)
            self.end_headers()
            return True
        return False

    def do_GET(self):
        if not self._redirect_bare():
            super().do_GET()

    def do_HEAD(self):
        if not self._redirect_bare():
            super().do_HEAD()

    def end_headers(self):
        # Revalidate every time: a retrained model or a rebuilt .wasm must show up on reload.
        self.send_header("Cache-Control", "no-cache")
        super().end_headers()

    def log_message(self, format, *args):
        if not self.quiet:
            super().log_message(format, *args)


def main(argv=None):
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--root", type=Path, default=REPO, help="folder to serve (default: the repo root)")
    parser.add_argument("--port", type=int, default=8000, help="port on 127.0.0.1; 0 picks a free one")
    parser.add_argument("--path", default="/web-demo/", help="the page the printed URL (and /) points to")
    parser.add_argument("--strict-port", action="store_true", help="fail when --port is taken instead of picking a free one")
    parser.add_argument("--quiet", action="store_true", help="don't log each request")
    args = parser.parse_args(argv)

    root = args.root.resolve()
    if not root.is_dir():
        parser.error(f"--root {root} is not a folder")
    Handler.quiet = args.quiet
    Handler.landing = args.path if args.path.startswith("/") else "/" + args.path
    handler = functools.partial(Handler, directory=str(root))
    try:
        server = ThreadingHTTPServer(("127.0.0.1", args.port), handler)
    except OSError as e:
        if args.strict_port or args.port == 0 or e.errno != errno.EADDRINUSE:
            sys.exit(f"serve.py: cannot listen on 127.0.0.1:{args.port}: {e.strerror}")
        # Another demo (or anything else) holds the port: a free one beats an error for `make demo`.
        print(f"serve.py: port {args.port} is taken; using a free one", file=sys.stderr, flush=True)
        server = ThreadingHTTPServer(("127.0.0.1", 0), handler)
    server.daemon_threads = True
    port = server.server_address[1]
    # The tests read this first line to learn the port; keep its shape.
    print(f"Serving {root} at http://127.0.0.1:{port}{Handler.landing}", flush=True)
    # SIGTERM (from a test's teardown) should end as quietly as Ctrl-C.
    signal.signal(signal.SIGTERM, lambda *_: sys.exit(0))
    try:
        server.serve_forever()
    except KeyboardInterrupt:
        pass
    finally:
        server.server_close()


if __name__ == "__main__":
    main()
