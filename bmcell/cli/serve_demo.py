"""`bmcell serve-demo [DIR]`: serve the offline web app (web_demo/) with the MIME types WASM and modules need."""

from __future__ import annotations

import errno
import functools
import http
import http.server
import ipaddress
import socket
import ssl
import urllib.parse
from collections.abc import Callable
from pathlib import Path, PurePosixPath
from typing import Optional

import typer

from bmcell.cli.common import console, err_console, reports_errors
from bmcell.core.errors import BmcellError

MIME_TYPES = {".wasm": "application/wasm", ".mjs": "text/javascript", ".js": "text/javascript",
              ".onnx": "application/octet-stream", ".json": "application/json",
              ".webmanifest": "application/manifest+json", ".svg": "image/svg+xml", ".md": "text/markdown"}
# What the app is made of (assets.js lists it): its top-level page, scripts, styles, manifest and icons (by suffix:
# package.json, README.md, a certificate or key are not served), onnxruntime-web's files in vendor/ and the installed
# model in bmcell_model/. Nothing else: no dotfile, no tests/, node_modules/ or tools/, no folder listing.
APP_SUFFIXES = frozenset({".html", ".js", ".mjs", ".css", ".webmanifest", ".svg", ".png", ".ico"})
APP_FOLDERS = ("vendor", "bmcell_model")


def _app_path(parts: tuple[str, ...]) -> bool:
    """True for the relative path of a file the app is made of (see APP_SUFFIXES and APP_FOLDERS)."""
    if not parts or any(part.startswith(".") or "\\" in part or "\0" in part for part in parts):
        return False
    if len(parts) == 1:
        return PurePosixPath(parts[0]).suffix.lower() in APP_SUFFIXES
    return len(parts) == 2 and parts[0] in APP_FOLDERS


def served_file(root: Path, url_path: str) -> Path | None:
    """The file a request path names, when it is one of the app's files inside root: index.html for /, a file of
    the app (_app_path) that is a regular file once every link is resolved, and still one of the app's files inside
    root then (a link out of the folder, or to tests/ inside it, is refused); else None (a 404), also for a path the
    file system refuses to look up (e.g. a name too long)."""
    path = urllib.parse.unquote(urllib.parse.urlsplit(url_path).path)
    if path in ("", "/"):
        path = "/index.html"
    if path.endswith("/"):
        return None  # a folder: never listed
    parts = tuple(path.lstrip("/").split("/"))
    if not _app_path(parts):
        return None
    try:  # a name the file system cannot hold (ENAMETOOLONG) names no file either
        root = root.resolve()
        target = root.joinpath(*parts).resolve()
        if not target.is_relative_to(root) or not _app_path(target.relative_to(root).parts) or not target.is_file():
            return None
    except OSError:
        return None
    return target


class DemoHandler(http.server.SimpleHTTPRequestHandler):
    """The app's files only (served_file), with WASM/module MIME types, revalidated on every load (the service
    worker does the caching)."""
    extensions_map = http.server.SimpleHTTPRequestHandler.extensions_map | MIME_TYPES

    def send_head(self):
        """404 for anything that is not one of the app's files; the file itself otherwise."""
        if served_file(Path(self.directory), self.path) is None:
            self.send_error(http.HTTPStatus.NOT_FOUND, "File not found")
            return None
        return super().send_head()

    def translate_path(self, path: str) -> str:
        """The resolved file served_file allows (send_head has checked it)."""
        target = served_file(Path(self.directory), path)
        return str(target) if target is not None else str(Path(self.directory) / ".refused")

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


def is_loopback(host: str) -> bool:
    """True when host keeps the server to this machine (127.0.0.0/8, ::1 or localhost)."""
    if host == "localhost":
        return True
    try:
        return ipaddress.ip_address(host).is_loopback
    except ValueError:
        return False


def tls_context(cert: Path, key: Path) -> ssl.SSLContext:
    """A server TLS context from a PEM certificate and its private key, or an error that names both files."""
    context = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
    try:
        context.load_cert_chain(cert, key)
    except OSError as error:  # ssl.SSLError is one: not PEM, or a key that is not the certificate's
        raise BmcellError(f"--cert {cert} --key {key}: cannot load them as a PEM certificate and its private key "
                          f"({error.strerror or error})") from None
    return context


def listen(host: str, port: int, handler: Callable[..., http.server.BaseHTTPRequestHandler]
           ) -> http.server.ThreadingHTTPServer:
    """The server bound to host:port, or an error saying why it cannot be."""
    try:
        return http.server.ThreadingHTTPServer((host, port), handler)
    except OSError as error:
        if error.errno == errno.EADDRINUSE:
            raise BmcellError(f"port {port} on {host} is in use (another serve-demo?): stop that, or give another "
                              "--port (0 picks a free one)") from None
        raise BmcellError(f"cannot listen on {host}:{port} ({error.strerror or error}): check --host and "
                          "--port") from None


@reports_errors
def serve_demo(
    folder: Path = typer.Argument(Path("web_demo"), help="The web app folder."),
    port: int = typer.Option(8000, help="Port (1-65535); 0 picks a free one."),
    host: str = typer.Option("127.0.0.1", help="Address to listen on: this machine only by default; 0.0.0.0 lets "
                             "phones on this network open the app (and anyone else on it)."),
    cert: Optional[Path] = typer.Option(None, help="PEM certificate for HTTPS (phones need HTTPS to install the app "
                                        "and use it offline, except on localhost)."),
    key: Optional[Path] = typer.Option(None, help="PEM private key for --cert."),
) -> None:
    """Serve the offline web app; open the printed address, classify, install, then it also works offline."""
    if not 0 <= port <= 65535:
        raise BmcellError(f"--port {port} is not a port: give 1 to 65535, or 0 for any free one")
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
    context = tls_context(cert, key) if cert is not None else None
    server = listen(host, port, functools.partial(DemoHandler, directory=str(folder)))
    scheme = "http"
    if context is not None:
        server.socket = context.wrap_socket(server.socket, server_side=True)
        scheme = "https"
    bound = server.server_address[1]
    if host in ("0.0.0.0", ""):
        where = f"localhost:{bound}/ (this machine) and {scheme}://{lan_address()}:{bound}/ (phones on this network)"
    elif host in ("127.0.0.1", "localhost"):
        where = f"localhost:{bound}/ (this machine)"
    else:
        where = f"{host}:{bound}/" + ("" if is_loopback(host) else " (this machine and phones on this network)")
    console.print(f"serving {folder} at {scheme}://{where}", highlight=False)
    if not is_loopback(host):
        err_console.print(f"[yellow]warning:[/] listening on {host or '0.0.0.0'}: anyone on this network can open "
                          "the app and download its model; use a network you trust", highlight=False)
    try:
        server.serve_forever()
    except KeyboardInterrupt:
        console.print("stopped")
    finally:
        server.server_close()
