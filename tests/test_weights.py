"""The paper's classifiers on demand (issue 15, item 2): pd_core.weights and `pdlab models --download`.

Everything runs against an HTTP server on 127.0.0.1 started by the test, serving a small generated
state dict under a torch-hub style file name whose hash part matches it; the registry entry of
ResNet-50 is pointed at that file name. The torch hub cache is a temporary TORCH_HOME.
"""
from __future__ import annotations

import ast
import dataclasses
import hashlib
import io
import os
import socket
import subprocess
import sys
import textwrap
import threading
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path

import pytest
import torch

from pd_core import models, weights
from pd_core.weights import WeightsError

REPO = Path(__file__).resolve().parents[1]


# --- fixtures ---------------------------------------------------------------------------------

def _state_dict_bytes(seed: int) -> bytes:
    generator = torch.Generator().manual_seed(seed)
    state = {"fc.weight": torch.randn(4, 3, generator=generator), "fc.bias": torch.zeros(4)}
    buffer = io.BytesIO()
    torch.save(state, buffer)
    return buffer.getvalue()


GOOD = _state_dict_bytes(0)
OTHER = _state_dict_bytes(1)  # a valid state dict, but not the one the name promises
FILE_NAME = f"resnet50-{hashlib.sha256(GOOD).hexdigest()[:8]}.pth"


class _Handler(BaseHTTPRequestHandler):
    """Routes: /good/<file> the file, /bad/<file> other bytes, /short/<file> half of the file
    with the full Content-Length announced, anything else 404."""

    def do_GET(self):  # noqa: N802 (http.server's name)
        kind = self.path.strip("/").split("/")[0]
        body = {"good": GOOD, "bad": OTHER, "short": GOOD}.get(kind)
        if body is None or not self.path.endswith("/" + FILE_NAME):
            self.send_error(404)
            return
        self.send_response(200)
        self.send_header("Content-Length", str(len(body)))
        self.end_headers()
        self.wfile.write(body[: len(body) // 2] if kind == "short" else body)
        self.close_connection = True

    def log_message(self, *args):  # keep the test output clean
        pass


@pytest.fixture(scope="module")
def server():
    httpd = ThreadingHTTPServer(("127.0.0.1", 0), _Handler)
    thread = threading.Thread(target=httpd.serve_forever, daemon=True)
    thread.start()
    yield f"http://127.0.0.1:{httpd.server_address[1]}"
    httpd.shutdown()
    httpd.server_close()


def _closed_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


@pytest.fixture
def hub(tmp_path, monkeypatch):
    """An empty torch hub cache (TORCH_HOME), no mirror, and ResNet-50 pointed at FILE_NAME on a
    closed port (so only an explicit mirror or URL reaches the test server)."""
    monkeypatch.setenv("TORCH_HOME", str(tmp_path / "torch-home"))
    monkeypatch.delenv(weights.MIRROR_ENV, raising=False)
    spec = dataclasses.replace(models.MODELS["resnet50"], weights_file=FILE_NAME,
                               weights_url=f"http://127.0.0.1:{_closed_port()}/models/{FILE_NAME}")
    monkeypatch.setitem(models.MODELS, "resnet50", spec)
    return tmp_path / "torch-home" / "hub" / "checkpoints"


def _cache_files(checkpoints: Path) -> list[str]:
    return sorted(p.name for p in checkpoints.iterdir()) if checkpoints.exists() else []


def _assert_one_sentence(message: str) -> None:
    assert "\n" not in message and message.endswith(".") and ". " not in message, message


# --- the published table ------------------------------------------------------------------------

def test_registry_names_torchvisions_published_files():
    import torchvision.models as tv

    published = {"resnet50": tv.ResNet50_Weights, "vgg19": tv.VGG19_Weights,
                 "inception_v3": tv.Inception_V3_Weights}
    assert set(weights.DOWNLOADABLE) == set(published)
    for name, enum in published.items():
        spec = models.MODELS[name]
        assert spec.weights_url == enum.IMAGENET1K_V1.url
        assert spec.weights_file == enum.IMAGENET1K_V1.url.rsplit("/", 1)[1]
    assert weights.expected_hash_prefix("resnet50-0676ba61.pth") == "0676ba61"
    assert weights.expected_hash_prefix("inception_v3_google-0cc3c7bd.pth") == "0cc3c7bd"


def test_mirror_replaces_host_and_path(monkeypatch):
    monkeypatch.delenv(weights.MIRROR_ENV, raising=False)
    assert weights.source_url("vgg19") == "https://download.pytorch.org/models/vgg19-dcbb9e9d.pth"
    monkeypatch.setenv(weights.MIRROR_ENV, "http://mirror.internal/torch/")
    assert weights.source_url("vgg19") == "http://mirror.internal/torch/vgg19-dcbb9e9d.pth"
    assert weights.source_url("vgg19", mirror="file:///srv/w") == "file:///srv/w/vgg19-dcbb9e9d.pth"


@pytest.mark.parametrize("name", ["efficientnet_lite0", "alexnet"])
def test_models_without_published_weights_are_refused(name):
    with pytest.raises(WeightsError) as info:
        weights.download(name)
    _assert_one_sentence(str(info.value))


# --- download -----------------------------------------------------------------------------------

def test_good_download_lands_in_the_hub_cache_and_the_registry_sees_it(hub, server, capsys):
    assert not models.model_status("resnet50").available
    path = weights.download("resnet50", mirror=f"{server}/good")
    assert path == hub / FILE_NAME
    assert path.read_bytes() == GOOD
    assert _cache_files(hub) == [FILE_NAME]  # no temporary file left beside it
    loaded = torch.load(path, weights_only=True)
    assert torch.equal(loaded["fc.weight"], torch.randn(4, 3, generator=torch.Generator().manual_seed(0)))
    status = models.model_status("resnet50")
    assert status.available and status.reason == "" and status.command == ""
    bar = capsys.readouterr().err
    assert FILE_NAME in bar and "100%" in bar and bar.endswith("\n")


def test_mirror_from_the_environment(hub, server, monkeypatch):
    monkeypatch.setenv(weights.MIRROR_ENV, f"{server}/good/")
    assert weights.download("resnet50", progress=False).read_bytes() == GOOD


def test_wrong_hash_is_refused_and_leaves_nothing(hub, server):
    with pytest.raises(WeightsError) as info:
        weights.download("resnet50", mirror=f"{server}/bad", progress=False)
    _assert_one_sentence(str(info.value))
    assert "SHA-256" in str(info.value) and "discarded" in str(info.value)
    assert _cache_files(hub) == []
    assert not models.model_status("resnet50").available


def test_truncated_transfer_is_refused_and_leaves_nothing(hub, server):
    with pytest.raises(WeightsError) as info:
        weights.download("resnet50", mirror=f"{server}/short", progress=False)
    _assert_one_sentence(str(info.value))
    assert f"{len(GOOD) // 2} of {len(GOOD)} bytes" in str(info.value)
    assert _cache_files(hub) == []


def test_unreachable_server_gives_one_sentence(hub):
    port = _closed_port()
    with pytest.raises(WeightsError) as info:
        weights.download("resnet50", mirror=f"http://127.0.0.1:{port}", progress=False)
    message = str(info.value)
    _assert_one_sentence(message)
    assert message.startswith(f"Could not reach 127.0.0.1:{port}")
    assert "--from FILE" in message and weights.MIRROR_ENV in message
    assert _cache_files(hub) == []


def test_missing_file_on_the_server_gives_one_sentence(hub, server):
    with pytest.raises(WeightsError) as info:
        weights.download("resnet50", mirror=f"{server}/nowhere", progress=False)
    _assert_one_sentence(str(info.value))
    assert "HTTP 404" in str(info.value)
    assert _cache_files(hub) == []


def test_checked_file_already_in_the_cache_is_not_fetched_again(hub):
    hub.mkdir(parents=True)
    (hub / FILE_NAME).write_bytes(GOOD)
    # The registry's URL is a closed port: a second fetch would fail.
    assert weights.download("resnet50", progress=False) == hub / FILE_NAME


def test_corrupt_file_in_the_cache_is_replaced(hub, server):
    hub.mkdir(parents=True)
    (hub / FILE_NAME).write_bytes(GOOD[:100])
    weights.download("resnet50", mirror=f"{server}/good", progress=False)
    assert (hub / FILE_NAME).read_bytes() == GOOD
    assert _cache_files(hub) == [FILE_NAME]


def test_interrupted_transfer_leaves_nothing(hub):
    class Interrupted(io.BytesIO):
        def read(self, size=-1):
            if self.tell() > 0:
                raise KeyboardInterrupt
            return super().read(10)

    with pytest.raises(KeyboardInterrupt):
        weights._install_stream(Interrupted(GOOD), hub / FILE_NAME, "00", total=len(GOOD),
                                origin="test", on_chunk=None)
    assert _cache_files(hub) == []


# --- --from FILE ----------------------------------------------------------------------------------

def test_install_file_good_copy(hub, tmp_path):
    copy = tmp_path / "from-usb.pth"
    copy.write_bytes(GOOD)
    assert weights.install_file("resnet50", copy) == hub / FILE_NAME
    assert (hub / FILE_NAME).read_bytes() == GOOD and copy.read_bytes() == GOOD
    assert _cache_files(hub) == [FILE_NAME]
    assert models.model_status("resnet50").available


@pytest.mark.parametrize("content", [OTHER, GOOD[:-1], b""])
def test_install_file_wrong_copy_is_refused(hub, tmp_path, content):
    copy = tmp_path / "from-usb.pth"
    copy.write_bytes(content)
    with pytest.raises(WeightsError) as info:
        weights.install_file("resnet50", copy)
    _assert_one_sentence(str(info.value))
    assert _cache_files(hub) == []


def test_install_file_missing_copy(hub, tmp_path):
    with pytest.raises(WeightsError) as info:
        weights.install_file("resnet50", tmp_path / "nowhere.pth")
    _assert_one_sentence(str(info.value))


# --- progress bar -----------------------------------------------------------------------------------

def test_progress_bar_draws_on_its_stream():
    stream = io.StringIO()
    bar = weights._ProgressBar("x.pth", total=2_000_000, stream=stream)
    bar(1_000_000)
    bar(2_000_000)
    bar(-1)  # finished
    text = stream.getvalue()
    assert text.startswith("\rx.pth  [###############...............]  50%  1.0/2.0 MB")
    assert text.endswith("[" + "#" * 30 + "] 100%  2.0/2.0 MB\n")


# --- the web app never downloads ------------------------------------------------------------------

def _imports_weights(path: Path) -> bool:
    tree = ast.parse(path.read_text(), filename=str(path))
    for node in ast.walk(tree):
        if isinstance(node, ast.ImportFrom):
            module = node.module or ""
            if module.endswith("weights") or any(alias.name == "weights" for alias in node.names):
                return True
        elif isinstance(node, ast.Import) and any(a.name.endswith(".weights") for a in node.names):
            return True
    return False


def test_only_the_command_line_imports_the_downloader():
    """The app (app.py, pages/, ui/) and the library it uses never reach pd_core.weights."""
    files = [REPO / "app.py", *(REPO / "pages").rglob("*.py"), *(REPO / "ui").rglob("*.py"),
             *(REPO / "pd_core").rglob("*.py")]
    allowed = {REPO / "pd_core" / "weights.py", REPO / "pd_core" / "cli.py"}
    allowed |= set((REPO / "pd_core" / "cli").rglob("*.py"))
    offenders = [str(f.relative_to(REPO)) for f in files if f not in allowed and _imports_weights(f)]
    assert offenders == []
    assert _imports_weights(REPO / "tests" / "test_weights.py")  # the scan does see an import


# --- the command line, end to end -----------------------------------------------------------------

# Runs `pd_core.cli.main` in a fresh interpreter with ResNet-50's registry entry renamed to
# FILE_NAME (the one change a test cannot make from outside the process).
_PATCHED_CLI = textwrap.dedent("""
    import dataclasses, sys
    from pd_core import models
    models.MODELS["resnet50"] = dataclasses.replace(models.MODELS["resnet50"], weights_file=sys.argv[1])
    from pd_core.cli import main
    sys.exit(main(sys.argv[2:]))
""")


def _cli(args: list[str], tmp_path: Path, mirror: str | None, patched: bool = True):
    env = {k: v for k, v in os.environ.items() if k not in ("PYTHONPATH", weights.MIRROR_ENV)}
    env["TORCH_HOME"] = str(tmp_path / "torch-home")
    if mirror is not None:
        env[weights.MIRROR_ENV] = mirror
    command = ([sys.executable, "-c", _PATCHED_CLI, FILE_NAME] if patched
               else [sys.executable, "-m", "pd_core"]) + args
    done = subprocess.run(command, cwd=REPO, env=env, capture_output=True, timeout=120)
    # Decoded by hand: text=True would turn the progress bar's "\r" into line breaks.
    done.stdout, done.stderr = done.stdout.decode(), done.stderr.decode()
    return done


def _assert_cli_error(done) -> str:
    assert done.returncode == 2, (done.stdout, done.stderr)
    # Progress-bar lines (redrawn with "\r") may come first; the error is one line of its own.
    lines = [line for line in done.stderr.split("\n") if line and not line.startswith("\r")]
    assert len(lines) == 1 and lines[0].startswith("error: "), done.stderr
    return lines[0]


def test_cli_download_from_the_mirror_then_listed_available(tmp_path, server):
    checkpoints = tmp_path / "torch-home" / "hub" / "checkpoints"
    done = _cli(["models", "--download", "resnet50"], tmp_path, mirror=f"{server}/good")
    assert done.returncode == 0, done.stderr
    assert str(checkpoints / FILE_NAME) in done.stdout
    assert "100%" in done.stderr  # the progress bar
    assert (checkpoints / FILE_NAME).read_bytes() == GOOD
    listing = _cli(["models", "--json"], tmp_path, mirror=None)
    statuses = {row["name"]: row for row in __import__("json").loads(listing.stdout)}
    assert statuses["resnet50"]["available"] is True
    assert statuses["vgg19"]["available"] is False
    assert "models --download vgg19" in statuses["vgg19"]["reason"]


def test_cli_download_with_a_wrong_hash_exits_2_and_leaves_nothing(tmp_path, server):
    done = _cli(["models", "--download", "resnet50"], tmp_path, mirror=f"{server}/bad")
    assert "SHA-256" in _assert_cli_error(done)
    assert _cache_files(tmp_path / "torch-home" / "hub" / "checkpoints") == []


def test_cli_download_without_network_is_one_sentence(tmp_path):
    # The real entry point and registry: torchvision's file name, a mirror on a closed port.
    port = _closed_port()
    done = _cli(["models", "--download", "vgg19"], tmp_path, mirror=f"http://127.0.0.1:{port}", patched=False)
    line = _assert_cli_error(done)
    assert f"Could not reach 127.0.0.1:{port}" in line and "--from FILE" in line
    assert _cache_files(tmp_path / "torch-home" / "hub" / "checkpoints") == []


def test_cli_download_refuses_unknown_names_before_fetching(tmp_path, server):
    done = _cli(["models", "--download", "resnet50", "alexnet"], tmp_path, mirror=f"{server}/good")
    assert "alexnet" in _assert_cli_error(done)
    assert _cache_files(tmp_path / "torch-home" / "hub" / "checkpoints") == []


def test_cli_from_file_good_and_bad(tmp_path):
    checkpoints = tmp_path / "torch-home" / "hub" / "checkpoints"
    bad = tmp_path / "bad.pth"
    bad.write_bytes(OTHER)
    _assert_cli_error(_cli(["models", "--from", str(bad), "--model", "resnet50"], tmp_path, mirror=None))
    assert _cache_files(checkpoints) == []
    good = tmp_path / "good.pth"
    good.write_bytes(GOOD)
    done = _cli(["models", "--from", str(good), "--model", "resnet50"], tmp_path, mirror=None)
    assert done.returncode == 0, done.stderr
    assert _cache_files(checkpoints) == [FILE_NAME]


@pytest.mark.parametrize("args", [["--from", "x.pth"], ["--model", "resnet50"],
                                  ["--download", "vgg19", "--from", "x.pth", "--model", "vgg19"]])
def test_cli_inconsistent_options_exit_2(tmp_path, args):
    _assert_cli_error(_cli(["models", *args], tmp_path, mirror=None, patched=False))
