"""Weights: files that are not checkpoints, code in pickles, safetensors by content, paths that
are not files, headless checkpoints with new heads, argument checks, and the Hub when offline."""

from __future__ import annotations

import hashlib
import http.server
import os
import socket
import subprocess
import sys
import threading
from pathlib import Path

import pytest
import timm
import torch
from safetensors.torch import save_file

import conformer_xai
from conformer_xai.models import weights as W

MICRO = "conformer_micro_patch16"
HEADS = ("conv_cls_head.bias", "conv_cls_head.weight", "trans_cls_head.bias",
         "trans_cls_head.weight")
NOT_READ = r"cannot read .*{} as a PyTorch checkpoint \(\.pth/\.pt\) or safetensors file: "


@pytest.fixture(scope="module")
def micro_sd() -> dict[str, torch.Tensor]:
    torch.manual_seed(0)
    return {k: v.clone() for k, v in timm.create_model(MICRO).state_dict().items()}


def closed_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


# --------------------------------------------------------------------------- not checkpoints
def test_a_text_file_is_not_a_checkpoint(tmp_path):
    text = tmp_path / "text.pth"
    text.write_text("hello\n")
    with pytest.raises(W.WeightsError, match=NOT_READ.format("text.pth") + "it is a text file"):
        W.load_state_dict_file(text)
    with pytest.raises(ValueError, match=NOT_READ.format("text.pth")):
        conformer_xai.load_model(MICRO, checkpoint=text)


def test_an_empty_file_says_it_is_empty(tmp_path):
    empty = tmp_path / "empty.pt"
    empty.write_bytes(b"")
    with pytest.raises(W.WeightsError, match=NOT_READ.format("empty.pt") + "the file is empty$"):
        W.load_state_dict_file(empty)


@pytest.mark.parametrize("content", [bytes(range(256)) * 4, b"\x80\x02}q\x00."])
def test_binary_that_torch_cannot_parse_is_one_valueerror(content, tmp_path):
    path = tmp_path / "binary.bin"
    path.write_bytes(content)
    with pytest.raises(W.WeightsError, match=NOT_READ.format("binary.bin")) as info:
        W.load_state_dict_file(path)
    message = str(info.value).replace(str(path), "")
    assert "\n" not in message and len(message) < 250, message


def test_code_in_a_pickle_is_refused_in_one_short_line_and_never_runs(micro_sd, tmp_path):
    marker = tmp_path / "code_ran"

    class Payload:
        def __reduce__(self):
            return (os.system, (f"touch {marker}",))

    evil = tmp_path / "evil.pth"
    torch.save({"model": micro_sd, "extra": Payload()}, evil)
    with pytest.raises(W.WeightsError) as info:
        conformer_xai.load_model(MICRO, checkpoint=evil)
    message = str(info.value)
    assert not marker.exists()
    assert "\n" not in message and len(message.replace(str(evil), "")) < 250, message
    assert message.startswith(f"refused to load {evil}: it holds Python objects other than "
                              f"tensors ({os.system.__module__}.system)"), message
    assert "weights_only" in message
    assert "state dict" in message and "safetensors" in message
    assert "weights_only=False" not in message and "False" not in message
    assert "arbitrary code" not in message and "Re-running" not in message


# --------------------------------------------------------------------------- safetensors by content
@pytest.mark.parametrize("name", ["weights.pth", "weights.SAFETENSORS", "weights.bin",
                                  "weights"])
def test_safetensors_are_recognised_by_content(name, micro_sd, tmp_path):
    path = tmp_path / name
    save_file(micro_sd, str(path))
    model = conformer_xai.load_model(MICRO, checkpoint=path)
    for key, value in micro_sd.items():
        assert torch.equal(model.state_dict()[key], value), key


def test_a_torch_file_named_safetensors_still_loads(micro_sd, tmp_path):
    path = tmp_path / "misnamed.safetensors"
    torch.save(micro_sd, path)
    assert W.load_state_dict_file(path).keys() == micro_sd.keys()


# --------------------------------------------------------------------------- paths
def test_a_directory_is_not_a_checkpoint(tmp_path):
    with pytest.raises(ValueError, match=rf"checkpoint {tmp_path} is a directory; expected a "
                                         r"checkpoint file") as info:
        conformer_xai.load_model(MICRO, checkpoint=tmp_path)
    assert not isinstance(info.value, FileNotFoundError)
    with pytest.raises(ValueError, match="is a directory"):
        W.load_state_dict_file(str(tmp_path))
    with pytest.raises(FileNotFoundError, match="checkpoint not found: .*absent.pth"):
        W.load_state_dict_file(tmp_path / "absent.pth")


# --------------------------------------------------------------------------- headless + new_head
@pytest.mark.parametrize("num_classes", [None, 3])
def test_new_head_starts_heads_when_the_checkpoint_has_none(num_classes, micro_sd, tmp_path):
    headless = {k: v for k, v in micro_sd.items() if k not in HEADS}
    path = tmp_path / "backbone.pth"
    torch.save(headless, path)
    with pytest.warns(W.WeightsWarning, match=rf"has no head weights \({', '.join(HEADS)}\); "
                                              r"the heads of .* start from random"):
        model = conformer_xai.load_model(MICRO, checkpoint=path, num_classes=num_classes,
                                         new_head=True)
    if num_classes is not None:
        assert model.conv_cls_head.out_features == model.trans_cls_head.out_features == 3
    for key, value in headless.items():
        assert torch.equal(model.state_dict()[key], value), key
    with torch.no_grad():
        assert torch.isfinite(model(torch.randn(1, 3, 64, 64))).all()
    with pytest.raises(W.WeightsError, match=r"has no head weights for conformer_micro_patch16 "
                                             r"\(.*trans_cls_head.weight missing\): pass "
                                             r"new_head=True"):
        conformer_xai.load_model(MICRO, checkpoint=path, num_classes=num_classes)


def test_new_head_with_one_head_absent_and_one_of_another_size(micro_sd, tmp_path):
    partial = {k: v for k, v in micro_sd.items() if not k.startswith("trans_cls_head.")}
    partial["conv_cls_head.weight"] = torch.zeros(7, partial["conv_cls_head.weight"].shape[1])
    partial["conv_cls_head.bias"] = torch.zeros(7)
    path = tmp_path / "partial.pth"
    torch.save(partial, path)
    with pytest.warns(W.WeightsWarning, match=r"skipped the checkpoint's head weights "
                                              r"\(conv_cls_head.bias, conv_cls_head.weight\) and "
                                              r"the checkpoint has no head weights "
                                              r"\(trans_cls_head.bias, trans_cls_head.weight\)"):
        model = conformer_xai.load_model(MICRO, checkpoint=path, num_classes=3, new_head=True)
    assert model.conv_cls_head.out_features == model.trans_cls_head.out_features == 3


# --------------------------------------------------------------------------- arguments
@pytest.mark.parametrize(("kwargs", "pattern"), [
    (dict(num_classes=-3), r"num_classes must be a positive integer or None .*got -3"),
    (dict(num_classes=0), r"num_classes must be a positive integer or None .*got 0"),
    (dict(num_classes="3"), r"num_classes must be a positive integer or None .*got '3'"),
    (dict(num_classes=2.0), r"num_classes must be a positive integer or None .*got 2.0"),
    (dict(in_chans=0), r"in_chans must be a positive integer or None .*got 0"),
    (dict(device="gpu"), r"unknown device 'gpu'; accepted: cpu, cuda, cuda:<n>"),
])
def test_bad_arguments_are_valueerrors_naming_what_is_accepted(kwargs, pattern):
    with pytest.raises(ValueError, match=pattern):
        conformer_xai.load_model(MICRO, weights="random", **kwargs)


@pytest.mark.skipif(torch.cuda.is_available(), reason="needs a machine without a CUDA GPU")
def test_cuda_without_a_gpu_is_a_valueerror():
    for device in ("cuda", "cuda:0", torch.device("cuda")):
        with pytest.raises(ValueError, match=r"no CUDA GPU is available here; use 'cpu'"):
            conformer_xai.load_model(MICRO, weights="random", device=device)


def test_the_model_name_must_be_a_string():
    with pytest.raises(ValueError, match=r"model name must be a string, got int; known: "
                                         r"conformer_tiny_patch16.*any timm model"):
        conformer_xai.load_model(3)
    with pytest.raises(ValueError, match=r"no model name given: pass a name \(known: "
                                         r"conformer_tiny_patch16.*any timm model.*checkpoint"):
        conformer_xai.load_model(None)  # None: the name comes from a checkpoint (issue 13)


def test_good_arguments_of_other_integer_and_device_types():
    model = conformer_xai.load_model(MICRO, weights="random", num_classes=torch.tensor(3).item(),
                                     device=torch.device("cpu"))
    assert model.num_classes == 3 and next(model.parameters()).device.type == "cpu"


# --------------------------------------------------------------------------- the Hub
LOAD = """
import sys, conformer_xai
from conformer_xai.models.weights import WeightsError
try:
    model = conformer_xai.load_model(sys.argv[1], weights="imagenet")
except WeightsError as e:
    print("WeightsError:", e)
else:
    from safetensors.torch import load_file
    import torch
    served = load_file(sys.argv[2])
    same = all(torch.equal(model.state_dict()[k], v) for k, v in served.items())
    print("loaded", model.weights_source, "same" if same else "different")
"""


def load_from_hub(name: str, endpoint: str, hf_home: Path, served: Path | None = None
                  ) -> subprocess.CompletedProcess:
    """``load_model(name, weights="imagenet")`` in a fresh interpreter against ``endpoint``."""
    env = {**os.environ, "HF_ENDPOINT": endpoint, "HF_HOME": str(hf_home),
           "TORCH_HOME": str(hf_home / "torch")}
    env.pop("HF_HUB_OFFLINE", None)
    return subprocess.run([sys.executable, "-c", LOAD, name, str(served or "")],
                          capture_output=True, text=True, timeout=600, env=env)


def test_unreachable_hub_fails_in_one_line_without_retry_chatter(tmp_path):
    endpoint = f"http://127.0.0.1:{closed_port()}"
    result = load_from_hub("resnet101", endpoint, tmp_path / "hf")
    assert result.returncode == 0, result.stderr
    assert result.stderr == ""
    [line] = result.stdout.splitlines()
    assert line.startswith(f"WeightsError: cannot load timm's pretrained weights for resnet101: "
                           f"127.0.0.1:{endpoint.rsplit(':', 1)[1]} cannot be reached "
                           f"(ConnectError: "), line
    assert line.endswith("and they are not cached; pass checkpoint=PATH with a local copy")


@pytest.fixture
def fake_hub(tmp_path):
    """A real HTTP server answering like the Hub for timm's test_resnet (other files: 404)."""
    torch.manual_seed(5)
    served = tmp_path / "served.safetensors"
    save_file(timm.create_model("test_resnet").state_dict(), str(served))
    data = served.read_bytes()
    requests: list[str] = []

    class Hub(http.server.BaseHTTPRequestHandler):
        def _headers(self) -> bool:
            requests.append(f"{self.command} {self.path}")
            found = self.path.endswith("/timm/test_resnet.r160_in1k/resolve/main/"
                                       "model.safetensors")
            self.send_response(200 if found else 404)
            if found:
                self.send_header("X-Repo-Commit", "0" * 40)
                self.send_header("ETag", f'"{hashlib.sha256(data).hexdigest()}"')
            self.send_header("Content-Length", str(len(data) if found else 0))
            self.end_headers()
            return found

        def do_HEAD(self):
            self._headers()

        def do_GET(self):
            if self._headers():
                self.wfile.write(data)

        def log_message(self, *args):
            pass

    httpd = http.server.ThreadingHTTPServer(("127.0.0.1", 0), Hub)
    thread = threading.Thread(target=httpd.serve_forever, daemon=True)
    thread.start()
    try:
        yield f"http://127.0.0.1:{httpd.server_address[1]}", served, requests
    finally:
        httpd.shutdown()
        httpd.server_close()
        thread.join()


def test_a_reachable_hub_downloads_as_before_and_the_cache_works_offline(fake_hub, tmp_path):
    endpoint, served, requests = fake_hub
    hf_home = tmp_path / "hf"
    result = load_from_hub("test_resnet", endpoint, hf_home, served)
    assert result.returncode == 0, result.stderr
    assert result.stdout.splitlines() == ["loaded imagenet same"], result.stdout + result.stderr
    assert "GET /timm/test_resnet.r160_in1k/resolve/main/model.safetensors" in requests
    # Cached now: loads with the Hub unreachable, silently.
    result = load_from_hub("test_resnet", f"http://127.0.0.1:{closed_port()}", hf_home, served)
    assert result.stdout.splitlines() == ["loaded imagenet same"], result.stdout + result.stderr
    assert result.stderr == ""
