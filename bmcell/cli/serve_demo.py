"""`bmcell serve-demo [DIR]`: serve the offline web app (web_demo/) with the MIME types WASM and modules need."""

from __future__ import annotations

import functools
import http.server
import socket
import ssl
from pathlib import Path
from typing import Optional

import typer

from bmcell.cli.common import console, reports_errors
from bmcell.core.errors import BmcellError

MIME_TYPES = {".wasm": "application/wasm", ".mjs": "text/javascript", ".js": "text/javascript",
              ".onnx": "application/octet-stream", ".json": "application/json",
              ".webmanifest": "application/manifest+json", ".svg": "image/svg+xml"}


class DemoHandler(http.server.SimpleHTTPRequestHandler):
    """Static files with WASM/module MIME types, revalidated on every load (the service worker does the caching)."""
    extensions_map = http.server.SimpleHTTPRequestHandler.extensions_map | MIME_TYPES

    def end_headers(self) -> None:
        """Add no-cache so a new model or app version is seen by the service worker on the next online load."""
        self.send_header("Cache-Control", "no-cache")
        super().end_headers()

    def log_request(self, code: int | str = "-", size: int | str = "-") -> None:
        """Log failed requests only."""
        if isinstance(code, int) and code >= 400:
            super().log_request(code, size)


def lan_address() -> str:
    """This machine's address on the local network (for opening the demo on a phone), or 127.0.0.1."""
    with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as probe:
        try:
            probe.connect(("192.0.2.1", 9))  # no packet is sent: this only picks the outgoing interface
            return probe.getsockname()[0]
        except OSError:
            return "127.0.0.1"


@reports_errors
def serve_demo(
    folder: Path = typer.Argument(Path("web_demo"), help="The web app folder."),
    port: int = typer.Option(8000, help="Port; 0 picks a free one."),
    host: str = typer.Option("0.0.0.0", help="Address to listen on; 127.0.0.1 keeps it to this machine."),
    cert: Optional[Path] = typer.Option(None, help="PEM certificate for HTTPS (phones need HTTPS to install the app "
                                        "and use it offline, except on localhost)."),
    key: Optional[Path] = typer.Option(None, help="PEM private key for --cert."),
) -> None:
    """Serve the offline web app; open the printed address, classify, install, then it also works offline."""
    if not (folder / "index.html").is_file():
        raise BmcellError(f"{folder} has no index.html; pass the web app folder (web_demo)")
    if not (folder / "vendor").is_dir():
        raise BmcellError(f"{folder}/vendor is missing: run `npm ci && npm run setup` in {folder} first "
                          "(it copies onnxruntime-web's files there)")
    if not (folder / "bmcell_model" / "model.json").is_file():
        console.print(f"[yellow]{folder}/bmcell_model/ has no model yet[/]: "
                      f"`bmcell export RUN --target web --app {folder}` installs one")
    if (cert is None) != (key is None):
        raise BmcellError("--cert and --key go together")
    handler = functools.partial(DemoHandler, directory=str(folder))
    server = http.server.ThreadingHTTPServer((host, port), handler)
    scheme = "http"
    if cert is not None:
        context = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
        context.load_cert_chain(cert, key)
        server.socket = context.wrap_socket(server.socket, server_side=True)
        scheme = "https"
    bound = server.server_address[1]
    console.print(f"serving {folder} at {scheme}://localhost:{bound}/ (this machine)"
                  + ("" if host.startswith("127.") else f" and {scheme}://{lan_address()}:{bound}/ (phones on "
                     "this network)"), highlight=False)
    try:
        server.serve_forever()
    except KeyboardInterrupt:
        console.print("stopped")
    finally:
        server.server_close()
