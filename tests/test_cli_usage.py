"""The console script's argument handling: --help, --version, usage errors (exit 2) and the
runtime errors found before any model loads (exit 1). None of these runs a model."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import pytest

import conformer_xai

REPO = Path(__file__).resolve().parents[1]
SCRIPT = Path(sys.executable).parent / "conformer-xai"
PHOTO = REPO / "examples" / "photos" / "chelsea.png"
COMMANDS = ("explain", "compare", "models", "evaluate", "train-synthetic")


def run(*args: str, cwd: Path | None = None) -> subprocess.CompletedProcess:
    return subprocess.run([str(SCRIPT), *args], capture_output=True, text=True, cwd=cwd,
                          timeout=300)


def assert_one_error_line(result: subprocess.CompletedProcess, code: int, *fragments: str
                          ) -> str:
    """Exit code ``code``, nothing on stdout, exactly one line on stderr naming the problem."""
    assert result.returncode == code, (result.returncode, result.stderr)
    assert result.stdout == ""
    lines = result.stderr.splitlines()
    assert len(lines) == 1, result.stderr
    assert lines[0].startswith("conformer-xai: error: "), lines[0]
    assert "Traceback" not in result.stderr
    for fragment in fragments:
        assert fragment in lines[0], (fragment, lines[0])
    return lines[0]


@pytest.fixture
def photo_dir(tmp_path: Path) -> Path:
    folder = tmp_path / "in"
    (folder / "sub").mkdir(parents=True)
    (folder / "sub" / "cat.png").write_bytes(PHOTO.read_bytes())
    return folder


def test_version_prints_the_package_version():
    result = run("--version")
    assert result.returncode == 0
    assert result.stdout.strip() == f"conformer-xai {conformer_xai.__version__}"


@pytest.mark.parametrize("command", ("", *COMMANDS))
def test_every_command_has_help(command: str):
    result = run(*([command] if command else []), "--help")
    assert result.returncode == 0, result.stderr
    assert result.stdout.startswith(f"Usage: conformer-xai {command}".rstrip())
    assert "--help" in result.stdout
    if not command:
        for name in COMMANDS:
            assert name in result.stdout
    if command == "explain":
        for option in ("--model", "--weights", "--checkpoint", "--num-classes", "--in-chans",
                       "--input-size", "--no-crop", "--labels", "--target", "--head",
                       "--methods", "--blocks", "--device", "--batch-size", "--out", "--format",
                       "--save-arrays", "--json", "--force", "--debug"):
            assert option in result.stdout, option


def test_no_arguments_shows_usage_and_exits_2():
    result = run()
    assert result.returncode == 2
    assert "Usage: conformer-xai" in result.stderr
    assert result.stdout == ""


@pytest.mark.parametrize(("args", "fragment"), [
    (["frobnicate"], "No such command 'frobnicate'"),
    (["explain"], "Missing argument"),
    (["explain", "{photo}", "--bogus"], "No such option '--bogus'"),
    (["explain", "{photo}", "--methods", "gradcam,nonsense"], "'nonsense'"),
    (["explain", "{photo}", "--head", "fused,tail"], "'tail'"),
    (["explain", "{photo}", "--blocks", "1,x"], "'x' is not a block number"),
    (["explain", "{photo}", "--blocks", "0"], "numbered from 1"),
    (["explain", "{photo}", "--input-size", "12by4"], "'12by4' is not a size"),
    (["explain", "{photo}", "--input-size", "100000x100000"], "too large: at most 8192"),
    (["explain", "{photo}", "--input-size", "20"], "at least 32"),
    (["explain", "{photo}", "--weights", "pretrained"], "'pretrained' is not one of"),
    (["explain", "{photo}", "--device", "tpu"], "'tpu' is not one of"),
    (["explain", "{photo}", "--format", "jpg"], "'jpg' is not one of"),
    (["explain", "{photo}", "--batch-size", "0"], "--batch-size"),
    (["explain", "{photo}", "--labels", "{missing}/labels.txt"], "--labels"),
    (["explain", "{missing}/nothing.png"], "nothing.png: no such file or folder"),
    (["explain", "{missing}/*.png"], "no files match"),
    (["explain", "{empty}"], "holds no image files"),
    (["explain", "{photo}", "--model", "conformer_small_patch16", "--weights", "embedded"],
     "--weights embedded exists only for resnet_micro, deit_micro_patch16, "
     "conformer_micro_patch16"),
    (["explain", "{photo}", "--weights", "random", "--checkpoint", "{photo}"],
     "either --weights or --checkpoint"),
    (["compare", "{missing}/nothing.png"], "nothing.png"),
    (["compare", "{photo}", "--models", "resnet_micro", "--weights", "embedded", "--format",
      "gif"], "'gif' is not one of"),
    (["evaluate"], "Missing option '--model'"),
    (["evaluate", "--model", "conformer_micro_patch16", "--n", "0"], "--n"),
    (["evaluate", "--model", "conformer_micro_patch16", "--steps", "0"], "--steps"),
    (["evaluate", "--model", "conformer_small_patch16"],
     "evaluate needs a model trained on the synthetic scenes: one with embedded weights "
     "(resnet_micro, deit_micro_patch16, conformer_micro_patch16) or --checkpoint"),
    (["evaluate", "--model", "conformer_small_patch16", "--weights", "embedded"],
     "--weights embedded exists only"),
    (["train-synthetic", "--model", "resnet_micro", "--steps", "2", "--out", "x", "--lr", "inf"],
     "'inf' is not a finite number > 0"),
    (["train-synthetic", "--model", "resnet_micro", "--steps", "2", "--out", "x", "--lr", "nan"],
     "--lr"),
    (["train-synthetic", "--model", "conformer_small_patch16", "--steps", "2", "--out", "x"],
     "'conformer_small_patch16' is not one of"),
    (["evaluate", "--model", "conformer_micro_patch16", "--methods", "nonsense"], "'nonsense'"),
    (["train-synthetic", "--model", "conformer_micro_patch16", "--steps", "2"],
     "Missing option '--out'"),
    (["train-synthetic", "--model", "conformer_micro_patch16", "--out", "x", "--steps", "-3"],
     "--steps"),
    (["models", "--bogus"], "No such option '--bogus'"),
])
def test_usage_errors_exit_2_with_one_line_before_torch_loads(args, fragment, tmp_path: Path):
    empty = tmp_path / "empty"
    (empty / "sub").mkdir(parents=True)
    (empty / "sub" / "notes.txt").write_text("not an image")
    args = [a.format(photo=PHOTO, missing=tmp_path / "missing", empty=empty) for a in args]
    assert_one_error_line(run(*args), 2, fragment)
    # The same arguments in-process: the error is found before torch is imported.
    probe = (
        "import sys\n"
        "from conformer_xai.cli import main\n"
        f"try:\n    main({args!r}, prog_name='conformer-xai')\n"
        "except SystemExit as e:\n    code = e.code\n"
        "print('\\n' + str(code) + ' ' + str('torch' in sys.modules))\n")
    result = subprocess.run([sys.executable, "-c", probe], capture_output=True, text=True,
                            timeout=120)
    assert result.stdout.splitlines()[-1] == "2 False", (result.stdout, result.stderr)


def test_unknown_model_is_a_usage_error():
    line = assert_one_error_line(run("explain", str(PHOTO), "--model", "conformerr_small"), 2,
                                 "unknown model 'conformerr_small'")
    assert "conformer_small_patch16" in line
    # evaluate checks the name before the weights (it was told "--weights embedded exists only")
    assert_one_error_line(run("evaluate", "--model", "foo"), 2, "unknown model 'foo'")


def test_unsupported_family_and_input_size_are_usage_errors_before_any_weights_load(
        tmp_path: Path):
    out = tmp_path / "out"
    # efficientnet_b0 would download its ImageNet weights first: the family is known before.
    for command in (["explain", str(PHOTO), "--model"], ["compare", str(PHOTO), "--models"]):
        line = assert_one_error_line(run(*command, "efficientnet_b0", "--out", str(out)), 2,
                                     "--model efficientnet_b0", "EfficientNet")
        assert "conformer" in line and "resnet" in line and "vit" in line
    assert_one_error_line(
        run("explain", str(PHOTO), "--model", "deit_micro_patch16", "--input-size", "100",
            "--out", str(out)),
        2, "--input-size 100x100", "multiples of 16", "e.g. 112x112")
    assert_one_error_line(
        run("explain", str(PHOTO), "--model", "deit_small_patch16_224", "--input-size", "256",
            "--out", str(out)),
        2, "--input-size 256x256", "takes only 224x224")
    assert not out.exists()


def test_two_inputs_writing_the_same_file_is_a_usage_error(tmp_path: Path):
    folder, out = tmp_path / "col", tmp_path / "out"
    folder.mkdir()
    (folder / "foo.png").write_bytes(PHOTO.read_bytes())
    (folder / "foo.maps.png").write_bytes(PHOTO.read_bytes())
    for force in ([], ["--force"]):
        line = assert_one_error_line(
            run("explain", str(folder), "--model", "conformer_micro_patch16", "--save-arrays",
                "--out", str(out), *force), 2,
            str(folder / "foo.png"), str(folder / "foo.maps.png"), str(out / "foo.maps.json"))
        assert "overwrite=True" not in line
    assert not out.exists()


def test_api_names_in_messages_become_option_names(tmp_path: Path):
    line = assert_one_error_line(
        run("explain", str(PHOTO), "--model", "resnet_micro", "--weights", "imagenet", "--out",
            str(tmp_path / "out")), 2, "use --weights embedded")
    assert "weights='embedded'" not in line


def test_missing_checkpoint_is_a_usage_error(tmp_path: Path):
    assert_one_error_line(run("explain", str(PHOTO), "--model", "conformer_micro_patch16",
                              "--checkpoint", str(tmp_path / "gone.pth")),
                          2, "--checkpoint", "gone.pth: no such file")


def test_a_failed_run_leaves_no_empty_output_folder(tmp_path: Path):
    bad = tmp_path / "bad.pth"
    bad.write_text("not a checkpoint")
    out = tmp_path / "new" / "out"
    assert_one_error_line(run("explain", str(PHOTO), "--model", "conformer_micro_patch16",
                              "--checkpoint", str(bad), "--out", str(out)), 1, "bad.pth")
    assert sorted(p.name for p in tmp_path.iterdir()) == ["bad.pth"]
    kept = tmp_path / "kept"  # a folder that existed before is kept, even when empty
    kept.mkdir()
    assert run("explain", str(PHOTO), "--model", "conformer_micro_patch16", "--checkpoint",
               str(bad), "--out", str(kept)).returncode == 1
    assert kept.is_dir()


def test_unwritable_output_folder_is_a_runtime_error(tmp_path: Path):
    blocker = tmp_path / "a_file"
    blocker.write_text("I am a file, not a folder")
    assert_one_error_line(run("explain", str(PHOTO), "--model", "conformer_micro_patch16",
                              "--weights", "random", "--out", str(blocker / "out")),
                          1, "cannot create output folder", str(blocker / "out"))
    assert blocker.read_text() == "I am a file, not a folder"


def test_existing_outputs_are_kept_without_force(photo_dir: Path, tmp_path: Path):
    out = tmp_path / "out"
    (out / "sub").mkdir(parents=True)
    mine = out / "sub" / "cat.json"
    mine.write_text('{"mine": true}')
    line = assert_one_error_line(
        run("explain", str(photo_dir), "--model", "conformer_micro_patch16", "--weights",
            "random", "--out", str(out)), 1, "exists", "--force")
    assert str(out / "sub" / "cat") in line
    assert json.loads(mine.read_text()) == {"mine": True}
    assert sorted(p.name for p in out.rglob("*")) == ["cat.json", "sub"]


def test_static_name_lists_match_the_package():
    from conformer_xai.cli import options as _common
    from conformer_xai.explain import METHODS
    from conformer_xai.explain.explainer import HEAD_NAMES
    from conformer_xai.models.weights import EMBEDDED_MODELS, WEIGHT_CHOICES

    assert set(_common.METHODS) == set(METHODS)
    assert _common.HEADS == HEAD_NAMES
    assert _common.EMBEDDED_MODELS == EMBEDDED_MODELS
    assert _common.WEIGHTS == WEIGHT_CHOICES
    import timm

    for name in _common.OUR_MODELS:
        assert timm.is_model(name), name
