"""`bmcell serve-demo`: this machine only unless asked, and only the web app's own files (no listings, no dotfiles,
no tests/, node_modules/ or tools/, no link out of the folder)."""

from __future__ import annotations

import functools
import http.server
import re
import socket
import threading
import urllib.error
import urllib.request
from pathlib import Path

import pytest
from typer.testing import CliRunner

from bmcell.cli import serve_demo
from bmcell.cli.main import app

WEB_DEMO = Path(__file__).resolve().parents[1] / "web_demo"


def shell_files() -> list[str]:
    """The app shell assets.js lists (what the service worker caches besides the runtime and the model)."""
    block = re.search(r"const SHELL = \[(.*?)\];", (WEB_DEMO / "assets.js").read_text(), re.DOTALL)
    return [name for name in re.findall(r'"([^"]+)"', block[1]) if name != "./"]


@pytest.fixture(scope="module")
def site(tmp_path_factory):
    """A web app folder as `npm run setup` and `bmcell export --app` leave it, plus what must never be served."""
    tmp_path = tmp_path_factory.mktemp("serve-demo")
    root = tmp_path / "web_demo"
    for name in shell_files() + ["vendor/ort-wasm-simd-threaded.wasm", "bmcell_model/model.onnx",
                                 "bmcell_model/MODEL_CARD.md", "package.json", "README.md", "tests/browser.mjs",
                                 "tools/setup.mjs", "node_modules/onnxruntime-web/package.json", ".env",
                                 ".git/config", "vendor/.hidden.js", "vendor/sub/deeper.js", "key.pem"]:
        (root / name).parent.mkdir(parents=True, exist_ok=True)
        (root / name).write_text(f"contents of {name}\n")
    outside = tmp_path / "outside"
    outside.mkdir()
    (outside / "secret.txt").write_text("a file outside the app folder\n")
    (root / "leak.js").symlink_to(outside / "secret.txt")
    (root / "bmcell_model" / "leak.md").symlink_to(outside / "secret.txt")
    (root / "bmcell_model" / "tests.md").symlink_to(root / "tests" / "browser.mjs")  # inside, but not the app's
    (root / "vendor" / "linked").symlink_to(outside, target_is_directory=True)
    return root


@pytest.fixture(scope="module")
def served(site):
    """GET a path from serve-demo's handler on site: (status, content type, body)."""
    server = http.server.ThreadingHTTPServer(("127.0.0.1", 0), functools.partial(serve_demo.DemoHandler,
                                                                                 directory=str(site)))
    thread = threading.Thread(target=server.serve_forever, args=(0.05,), daemon=True)
    thread.start()

    def get(path: str) -> tuple[int, str, str]:
        url = f"http://127.0.0.1:{server.server_address[1]}{path}"
        try:
            with urllib.request.urlopen(url, timeout=10) as response:
                return response.status, response.headers["Content-Type"], response.read().decode()
        except urllib.error.HTTPError as error:
            return error.code, error.headers["Content-Type"], error.read().decode()

    yield get
    server.shutdown()
    server.server_close()


def test_serves_every_file_the_app_needs(served):
    for name in shell_files():
        status, _, body = served(f"/{name}")
        assert (status, body) == (200, f"contents of {name}\n"), name
    assert served("/")[2] == "contents of index.html\n"
    wasm = served("/vendor/ort-wasm-simd-threaded.wasm?v=3398c10d07d229bd")
    assert wasm[:2] == (200, "application/wasm")
    assert served("/bmcell_model/model.onnx?v=0123456789abcdef")[0] == 200
    assert served("/bmcell_model/MODEL_CARD.md")[:1] == (200,)
    assert served("/app.js")[1] == "text/javascript"


@pytest.mark.parametrize("path", [
    "/vendor/", "/bmcell_model/", "/tests/", "/vendor", "/tests/browser.mjs", "/tools/setup.mjs",
    "/node_modules/onnxruntime-web/package.json", "/package.json", "/README.md", "/key.pem", "/.env", "/.git/config",
    "/vendor/.hidden.js", "/vendor/sub/deeper.js", "/leak.js", "/bmcell_model/leak.md", "/bmcell_model/tests.md",
    "/vendor/linked/secret.txt", "/../outside/secret.txt", "/%2e%2e/outside/secret.txt", "/vendor/%2e%2e/.env",
    "/vendor/..%2f..%2foutside/secret.txt",
])
def test_serves_nothing_else(served, path):
    """No folder listing, no dotfile, nothing of tests/, tools/ or node_modules/, no link out of the folder."""
    status, _, body = served(path)
    assert status == 404, (path, body)
    assert "Directory listing" not in body and "contents of" not in body and "outside the app" not in body


class FakeServer:
    """Stands in for ThreadingHTTPServer: records the address and stops at once."""

    bound: tuple[str, int] | None = None

    def __init__(self, address, handler):
        FakeServer.bound = address
        self.server_address = (address[0], 8123)

    def serve_forever(self):
        raise KeyboardInterrupt

    def server_close(self):
        pass


def test_listens_on_this_machine_unless_told_otherwise(site, monkeypatch):
    monkeypatch.setattr(serve_demo.http.server, "ThreadingHTTPServer", FakeServer)
    monkeypatch.setattr(serve_demo, "lan_address", lambda: "192.168.1.23")
    runner = CliRunner()
    local = runner.invoke(app, ["serve-demo", str(site)])
    assert local.exit_code == 0, local.output
    assert FakeServer.bound == ("127.0.0.1", 8000)
    assert "http://localhost:8123/" in local.output and "192.168" not in local.output
    assert "warning" not in local.output
    shared = runner.invoke(app, ["serve-demo", str(site), "--host", "0.0.0.0"])
    assert shared.exit_code == 0, shared.output
    assert FakeServer.bound == ("0.0.0.0", 8000)
    assert "http://192.168.1.23:8123/ (phones on this network)" in shared.output
    warnings = [line for line in shared.output.splitlines() if "warning" in line]
    assert len(warnings) == 1 and "anyone on this network" in warnings[0], shared.output


def test_a_file_name_too_long_for_the_file_system_is_a_404(served):
    """A name past the file system's limit (ENAMETOOLONG) is answered 404, and the server goes on serving."""
    for path in ("/" + "a" * 8000 + ".js", "/vendor/" + "a" * 8000, "/bmcell_model/" + "b" * 300 + ".md"):
        assert served(path)[0] == 404, path[:20]
    assert served("/app.js")[0] == 200


def test_startup_errors_are_one_line(site, tmp_path):
    """A busy port, a --port out of range, an unknown host and a --cert/--key that is not PEM: one line each, exit 2,
    no traceback."""
    runner = CliRunner()
    with socket.socket() as busy:
        busy.bind(("127.0.0.1", 0))
        busy.listen()
        taken = busy.getsockname()[1]
        in_use = runner.invoke(app, ["serve-demo", str(site), "--port", str(taken)])
    (tmp_path / "cert.pem").write_text("not a certificate\n")
    (tmp_path / "key.pem").write_text("not a key\n")
    not_pem = runner.invoke(app, ["serve-demo", str(site), "--port", "0", "--cert", str(tmp_path / "cert.pem"),
                                  "--key", str(tmp_path / "key.pem")])
    missing = runner.invoke(app, ["serve-demo", str(site), "--port", "0", "--cert", str(tmp_path / "none.pem"),
                                  "--key", str(tmp_path / "key.pem")])
    out_of_range = runner.invoke(app, ["serve-demo", str(site), "--port", "99999"])
    negative = runner.invoke(app, ["serve-demo", str(site), "--port", "-1"])
    unknown_host = runner.invoke(app, ["serve-demo", str(site), "--port", "0", "--host", "no-such-host.invalid"])
    for result, words in ((in_use, f"port {taken} on 127.0.0.1 is in use"), (not_pem, "PEM certificate"),
                          (missing, "PEM certificate"), (out_of_range, "--port 99999 is not a port"),
                          (negative, "--port -1 is not a port"), (unknown_host, "cannot listen on no-such-host")):
        errors = [line for line in result.output.splitlines() if line.startswith("error:")]
        assert result.exit_code == 2 and "Traceback" not in result.output, result.output
        assert len(errors) == 1 and words in errors[0], result.output
