"""``conformer-xai report`` and ``--report``: the static site, its data, and the pages in a real
headless Chromium (Debian's chromium + chromium-driver through Selenium).

Three sites are built once per module: ``explain --report`` over two scenes (every method and
block), ``explain-dataset --report`` over two scenes and an unreadable file, and ``report`` over
a 120-image synthetic store without images (for the index's paging, sorting and filtering).
"""

from __future__ import annotations

import base64
import json
import os
import shutil
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
import torch
import torch.nn.functional as F

ROOT = Path(__file__).resolve().parents[1]
SCRIPT = Path(sys.executable).parent / "conformer-xai"
SCENES = ROOT / "examples" / "scenes"
MICRO = ["--model", "conformer_micro_patch16", "--weights", "embedded", "--device", "cpu"]
BROWSER_FLAGS = ("--headless", "--no-sandbox", "--disable-gpu", "--disable-quic",
                 "--no-first-run", "--disable-background-networking",
                 "--disable-component-update", "--disable-sync", "--window-size=1400,1000")


def cli(*args: object, cwd: Path = ROOT) -> subprocess.CompletedProcess:
    return subprocess.run([str(SCRIPT), *map(str, args)], capture_output=True, text=True,
                          timeout=600, cwd=cwd)


def read_js(path: Path, name: str):
    text = path.read_text()
    prefix = f"window.{name}="
    assert text.startswith(prefix) and text.rstrip().endswith(";")
    return json.loads(text[len(prefix):].rstrip()[:-1])


def site_maps(site: Path, page_id: str) -> dict[str, np.ndarray]:
    """Decode one image's maps from the site's own data files: key -> uint8 (h, w)."""
    layouts = read_js(site / "data" / "site.js", "CX_SITE")["layouts"]
    maps = read_js(site / "data" / "maps" / f"{page_id}.js", "CX_MAPS")
    layout = layouts[maps["layout"]]
    data = np.frombuffer(base64.b64decode(maps["data"]), dtype=np.uint8)
    out = {}
    for key, (h, w), offset in zip(layout["keys"], layout["shapes"], layout["offsets"]):
        out[key] = data[offset:offset + h * w].reshape(h, w)
    assert sum(g.size for g in out.values()) == data.size
    return out


def jet_lut() -> np.ndarray:
    from matplotlib import colormaps

    return np.rint(colormaps["jet"](np.linspace(0, 1, 256))[:, :3] * 255).astype(np.float32)


def index_rows(site: Path) -> list[dict]:
    data = read_js(site / "data" / "index.js", "CX_INDEX")
    keys = [c["key"] for c in data["columns"] if c["type"] != "thumb"]
    return [dict(zip(keys, row)) for row in data["rows"]]


# ----------------------------------------------------------------------------- the sites
@pytest.fixture(scope="module")
def explain_site(tmp_path_factory) -> tuple[Path, dict]:
    out = tmp_path_factory.mktemp("explain") / "out"
    images = [SCENES / "scene_000.png", SCENES / "scene_002.png"]  # absolute paths on purpose
    proc = cli("explain", *images, *MICRO, "--out", out, "--report", "--json")
    assert proc.returncode == 0, proc.stderr
    return out, json.loads(proc.stdout)


@pytest.fixture(scope="module")
def dataset_site(tmp_path_factory) -> tuple[Path, Path, subprocess.CompletedProcess]:
    base = tmp_path_factory.mktemp("dataset")
    data = base / "data"
    data.mkdir()
    for name in ("scene_001.png", "scene_003.png", "scenes.json"):
        shutil.copy(SCENES / name, data / name)
    (data / "broken.png").write_bytes(b"not an image")
    store = base / "maps.zarr"
    proc = cli("explain-dataset", data, "--out", store, *MICRO, "--methods",
               "features,gradcam,rollout", "--blocks", "1,6,12", "--batch-size", "2",
               "--num-workers", "0", "--report")
    return store, base / "maps.zarr-report", proc


@pytest.fixture(scope="module")
def big_site(tmp_path_factory) -> tuple[Path, Path]:
    sys.path.insert(0, str(ROOT))
    from benchmarks.report_build import synthetic_store

    base = tmp_path_factory.mktemp("big")
    synthetic_store(base / "store", 120, images=None, grid_scale=0.25, chunk=16, metrics=True)
    proc = cli("report", base / "store", "--out", base / "site")
    assert proc.returncode == 0, proc.stderr
    assert "--images" in proc.stderr  # the note: a store holds maps, not images
    return base / "store", base / "site"


# ----------------------------------------------------------------------------- files and data
def test_explain_report_is_built_from_the_run(explain_site):
    out, run = explain_site
    site = out / "report"
    assert run["report"] == str(site / "index.html")
    marker = json.loads((site / "report.json").read_text())
    assert marker["complete"] and marker["source"] == "explain" and marker["images"] == 2
    assert sorted(p.name for p in (site / "images").glob("*.html")) == ["0000.html", "0001.html"]
    rows = index_rows(site)
    assert [r["file"] for r in rows] == ["scene_000", "scene_002"]
    assert [r["truth"] for r in rows] == ["red_headed_bird", "striped_disc"]  # scenes.json
    summary = json.loads((out / "scene_000.json").read_text())
    for head, preds in summary["predictions"].items():
        assert rows[0][f"pred_{head}"] == preds[0]["name"]
        assert rows[0][f"prob_{head}"] == pytest.approx(preds[0]["prob"], abs=1e-4)
    tops = {rows[0][f"pred_{h}"] for h in summary["predictions"]}
    assert rows[0]["agree"] == (len(tops) == 1)


def test_explain_maps_are_the_saved_arrays_as_uint8(explain_site):
    from conformer_xai import Explanation
    from conformer_xai.explain.result import normalise_per_image

    out, _ = explain_site
    exp = Explanation.load(out / "scene_000.maps.npz")
    maps = site_maps(out / "report", "0000")
    assert set(maps) == set(exp.raw)  # every map, none left out
    for key, grid in maps.items():
        expected = np.rint(normalise_per_image(exp.raw[key].float()).numpy()[0] * 255)
        assert grid.shape == expected.shape
        assert np.abs(grid.astype(int) - expected).max() <= 1, key


def test_store_maps_and_predictions_are_the_store(dataset_site):
    import zarr

    store, site, proc = dataset_site
    assert proc.returncode == 1  # the unreadable file is reported, the rest is written
    assert "broken.png" in proc.stderr and "Traceback" not in proc.stderr
    group = zarr.open_group(str(store), mode="r")
    paths = json.loads((store / "images.json").read_text())
    rows = index_rows(site)
    assert [r["file"] for r in rows] == paths
    for i, path in enumerate(paths):
        if path == "broken.png":
            assert rows[i]["error"] and not (site / "data" / "maps" / f"{i:04d}.js").exists()
            continue
        maps = site_maps(site, f"{i:04d}")
        for key, grid in maps.items():
            stored = np.asarray(group[f"maps/{key}"][i], dtype=np.float64)
            assert np.array_equal(grid, np.rint(np.clip(stored, 0, 1) * 255)), key
        assert rows[i]["pred_fused"] == rows[i]["truth"]  # the embedded model gets both right
        assert rows[i]["prob_fused"] == pytest.approx(float(group["prob/fused"][i]), abs=1e-4)


def test_branch_agreement_is_spearman_of_the_upsampled_maps(explain_site):
    from scipy.stats import spearmanr

    out, _ = explain_site
    site = out / "report"
    maps = site_maps(site, "0001")
    row = index_rows(site)[1]
    for head in ("fused", "cnn"):
        a, b = (torch.tensor(maps[f"gradcam/{head}/{br}/12"], dtype=torch.float32)[None, None]
                for br in ("cnn", "transformer"))
        size = (max(a.shape[-2], b.shape[-2]), max(a.shape[-1], b.shape[-1]))
        a, b = (F.interpolate(t, size=size, mode="bilinear", align_corners=False).flatten()
                for t in (a, b))
        rho = spearmanr(a.numpy(), b.numpy()).statistic
        assert row[f"rho_{head}"] == pytest.approx(rho, abs=2e-3)


def test_index_has_truth_metrics_and_every_row(big_site):
    _, site = big_site
    data = read_js(site / "data" / "index.js", "CX_INDEX")
    keys = [c["key"] for c in data["columns"]]
    assert {"truth", "metric_pointing_game", "agree", "correct", "rho_fused"} <= set(keys)
    assert len(data["rows"]) == 120
    assert (site / "data" / "index.js").stat().st_size < 200 * 120  # rows stay small
    assert len(list((site / "thumbs").glob("*.jpg"))) == 120  # map thumbnails without images


def all_sites(explain_site, dataset_site, big_site) -> list[Path]:  # noqa: D103
    return [explain_site[0] / "report", dataset_site[1], big_site[1]]


def test_every_page_parses_as_strict_html5(explain_site, dataset_site, big_site):
    import html5lib

    parser = html5lib.HTMLParser(strict=True)
    pages = [p for site in all_sites(explain_site, dataset_site, big_site)
             for p in site.rglob("*.html")]
    assert len(pages) == 3 + 4 + 121  # each site: its index and one page per image
    for page in pages:
        parser.parse(page.read_text(encoding="utf-8"))  # raises on any parse error


def test_no_file_holds_a_path_of_this_machine(explain_site, dataset_site, big_site,
                                              tmp_path_factory):
    forbidden = {str(ROOT), str(tmp_path_factory.getbasetemp()), os.getcwd(),
                 str(tmp_path_factory.getbasetemp().resolve())}
    for site in all_sites(explain_site, dataset_site, big_site):
        for file in site.rglob("*"):
            if file.suffix in (".html", ".js", ".css", ".json"):
                text = file.read_text(encoding="utf-8")
                for path in forbidden:
                    assert path not in text, (file, path)
    page = (explain_site[0] / "report" / "images" / "0000.html").read_text()
    assert "examples/scenes/scene_000.png" in page  # the input, relative to the repository


@pytest.fixture(scope="module")
def meta_site(explain_site, tmp_path_factory) -> Path:
    """One explanation whose metadata has keys the report does not know, an audio front end
    among them (the scene then reads as a spectrogram folded twice)."""
    from conformer_xai.report import build_report

    out, _ = explain_site
    base = tmp_path_factory.mktemp("meta")
    run = base / "run"
    run.mkdir()
    shutil.copy(out / "scene_000.maps.npz", run / "a.maps.npz")
    sidecar = json.loads((out / "scene_000.maps.json").read_text())
    sidecar["meta"].update({
        "tap": "stage end", "size_mismatch": "resize",
        "audio": {"sr": 32000, "n_fft": 512, "hop_length": 160, "n_mels": 64, "fmin": 50,
                  "fmax": 14000, "freq_ratio": 2},
        "checkpoint": "/home/someone/private/fork.pth"})
    sidecar["flows"] = {"fused": [{"block": 1, "cnn_stays": 0.4, "fcu_down": 0.1},
                                  {"block": 2, "cnn_stays": 0.3, "fcu_up": 0.2}]}
    (run / "a.maps.json").write_text(json.dumps(sidecar))
    build_report(run, base / "site")
    return base / "site"


def test_unknown_metadata_is_shown(meta_site):
    import html5lib

    page = (meta_site / "images" / "0000.html").read_text()
    html5lib.HTMLParser(strict=True).parse(page)
    highlights = page[page.index("how the maps were made"):page.index('id="viewer"')]
    for text in ("stage end", "size mode", "resize", "front end", "hop_length", "32000"):
        assert text in highlights, text
    flows = page[page.index(">flows<"):]
    assert all(f">{c}<" in flows for c in ("block", "cnn_stays", "fcu_down", "fcu_up"))
    assert "/home/someone" not in page and ".../fork.pth" in page


def test_audio_axes_follow_the_front_end():
    from conformer_xai.report.audio import axes, hz_to_mel

    meta = {"front_end": {"sr": 32000, "hop_length": 160, "n_mels": 112, "fmin": 50,
                          "fmax": 14000, "freq_ratio": 2}}
    tf = axes(meta, 224, 224)
    assert (tf["fold"], tf["width"], tf["height"]) == (2, 448, 112)
    assert tf["seconds"] == pytest.approx(448 * 160 / 32000)  # 2.24 s
    assert tf["x_ticks"][0] == (0.0, "0 s") and tf["x_ticks"][-1][1] == "2 s"
    assert dict((label, p) for p, label in tf["y_ticks"])["1 kHz"] == pytest.approx(
        100 * (hz_to_mel(1000) - hz_to_mel(50)) / (hz_to_mel(14000) - hz_to_mel(50)), abs=1e-3)
    assert hz_to_mel(1000) == pytest.approx(15.0) and hz_to_mel(6400) == pytest.approx(42.0)
    assert axes({"sr": 16000}, 224, 224) is None  # no hop length: not a front end
    assert axes(meta, 225, 100)["fold"] == 1  # a height that does not split stays folded


# ----------------------------------------------------------------------------- the command line
def test_report_errors_are_one_line(explain_site, big_site, tmp_path):
    out, _ = explain_site
    missing = cli("report", tmp_path / "nope", "--out", tmp_path / "site")
    assert missing.returncode == 2
    assert missing.stderr.startswith("conformer-xai: error: ") and "no such folder" in \
        missing.stderr and len(missing.stderr.splitlines()) == 1
    (tmp_path / "figs").mkdir()
    (tmp_path / "figs" / "a.json").write_text("{}")
    no_arrays = cli("report", tmp_path / "figs", "--out", tmp_path / "site")
    assert no_arrays.returncode == 2 and "--save-arrays" in no_arrays.stderr
    images = cli("report", out, "--out", tmp_path / "site", "--images", tmp_path)
    assert images.returncode == 2 and "--images" in images.stderr
    (tmp_path / "mine").mkdir()
    (tmp_path / "mine" / "notes.txt").write_text("keep me")
    foreign = cli("report", out, "--out", tmp_path / "mine", "--force")
    assert foreign.returncode == 1 and "not a conformer-xai report" in foreign.stderr
    assert (tmp_path / "mine" / "notes.txt").read_text() == "keep me"
    again = cli("report", out, "--out", out / "report")
    assert again.returncode == 1 and "--force" in again.stderr and "Traceback" not in \
        again.stderr
    assert len(again.stderr.splitlines()) == 1


def test_explain_report_refuses_before_running(explain_site):
    out, _ = explain_site
    proc = cli("explain", SCENES / "scene_000.png", *MICRO, "--out", out, "--report")
    assert proc.returncode == 1 and "--force" in proc.stderr
    assert "wrote" not in proc.stdout


# ----------------------------------------------------------------------------- in Chromium
@pytest.fixture(scope="module")
def browser(tmp_path_factory):
    chromium = shutil.which("chromium") or shutil.which("chromium-browser")
    driver_bin = shutil.which("chromedriver")
    if chromium is None or driver_bin is None:
        pytest.skip("no Chromium here: the browser tests need Debian's chromium and "
                    "chromium-driver (apt-get install chromium chromium-driver)")
    from selenium import webdriver

    options = webdriver.ChromeOptions()
    options.binary_location = chromium
    for flag in BROWSER_FLAGS:
        options.add_argument(flag)
    options.add_argument(f"--user-data-dir={tmp_path_factory.mktemp('chromium-profile')}")
    options.set_capability("goog:loggingPrefs", {"browser": "ALL"})
    driver = webdriver.Chrome(options=options,
                              service=webdriver.ChromeService(executable_path=driver_bin))
    try:
        yield driver
    finally:
        driver.quit()


def visit(driver, page: Path, ready: str) -> None:
    """Open a page, wait for its script, and check: no console error, every image loaded."""
    from selenium.webdriver.support.ui import WebDriverWait

    driver.get_log("browser")  # drop what earlier pages logged
    driver.get(page.as_uri())
    WebDriverWait(driver, 20).until(
        lambda d: d.execute_script(f"return document.querySelector('{ready}')"
                                   ".dataset.ready === '1'"))
    errors = [e for e in driver.get_log("browser") if e["level"] in ("SEVERE", "ERROR")]
    assert errors == [], errors
    WebDriverWait(driver, 20).until(lambda d: d.execute_script(
        "return Array.from(document.images).every(i => i.complete)"))
    broken = driver.execute_script(
        "return Array.from(document.images).filter(i => i.naturalWidth === 0).map(i => i.src)")
    assert broken == []


def canvas_rgb(driver, canvas) -> np.ndarray:
    text = driver.execute_script("""
        const c = arguments[0], d = c.getContext('2d').getImageData(0, 0, c.width, c.height);
        let s = '';
        for (let i = 0; i < d.data.length; i += 8192) {
          s += String.fromCharCode.apply(null, d.data.subarray(i, i + 8192));
        }
        return [c.width, c.height, btoa(s)];""", canvas)
    w, h, data = text
    return np.frombuffer(base64.b64decode(data), np.uint8).reshape(h, w, 4)[..., :3]


def expected_rgb(grid: np.ndarray, size: tuple[int, int]) -> np.ndarray:
    """The grid coloured with jet, then bilinearly upsampled (align_corners=False)."""
    rgb = torch.tensor(jet_lut()[grid]).permute(2, 0, 1)[None]
    return F.interpolate(rgb, size=size, mode="bilinear", align_corners=False)[0].permute(
        1, 2, 0).numpy()


def shows(driver, canvas, maps: dict[str, np.ndarray], key: str) -> None:
    """The canvas names ``key`` and its pixels are that map (and no other map of its size)."""
    assert canvas.get_attribute("data-key") == key
    got = canvas_rgb(driver, canvas).astype(np.float32)
    size = got.shape[:2]
    mine = expected_rgb(maps[key], size)
    own = np.abs(got - mine)
    # the browser's bilinear filter weighs in fixed point: a few levels off on steep edges
    assert own.mean() < 8 and np.percentile(own, 99) < 40, (key, own.mean(),
                                                             np.percentile(own, 99))
    for other, grid in maps.items():  # and it is not any other map that looks different
        if grid.shape == maps[key].shape and other != key:
            theirs = expected_rgb(grid, size)
            if np.abs(theirs - mine).mean() > 4 * own.mean():
                assert np.abs(got - theirs).mean() > 2 * own.mean(), (key, other)


def test_viewer_shows_the_map_the_controls_name(browser, explain_site):
    from selenium.webdriver.common.action_chains import ActionChains
    from selenium.webdriver.common.by import By
    from selenium.webdriver.common.keys import Keys
    from selenium.webdriver.support.ui import Select

    out, _ = explain_site
    site = out / "report"
    maps = site_maps(site, "0000")
    visit(browser, site / "images" / "0000.html", "#viewer")
    cnn, transformer = (browser.find_element(By.CSS_SELECTOR, f'.panel[data-branch="{b}"] '
                                             "canvas") for b in ("cnn", "transformer"))
    shows(browser, cnn, maps, "gradcam/fused/cnn/12")  # the default view: both branches
    shows(browser, transformer, maps, "gradcam/fused/transformer/12")

    ActionChains(browser).move_to_element(browser.find_element(By.TAG_NAME, "h1")).click() \
        .send_keys(Keys.ARROW_LEFT).send_keys(Keys.ARROW_LEFT).perform()  # keys move blocks
    shows(browser, cnn, maps, "gradcam/fused/cnn/10")
    assert browser.find_element(By.ID, "block-value").text == "10"
    slider = browser.find_element(By.ID, "block")
    assert slider.get_attribute("type") == "range"
    slider.send_keys(Keys.ARROW_RIGHT)  # the slider itself
    shows(browser, transformer, maps, "gradcam/fused/transformer/11")

    Select(browser.find_element(By.ID, "head")).select_by_value("cnn")
    shows(browser, cnn, maps, "gradcam/cnn/cnn/11")
    Select(browser.find_element(By.ID, "method")).select_by_value("features")
    shows(browser, cnn, maps, "features/cnn/11")
    assert browser.find_element(By.ID, "head").get_attribute("disabled") is not None
    assert not browser.find_element(By.ID, "matrix").is_displayed()  # no heads, no matrix

    Select(browser.find_element(By.ID, "method")).select_by_value("rollout")
    shows(browser, transformer, maps, "rollout/transformer")
    assert cnn.get_attribute("data-key") == ""  # rollout has no CNN map
    assert slider.get_attribute("disabled") is not None

    Select(browser.find_element(By.ID, "method")).select_by_value("gradcam")
    Select(browser.find_element(By.ID, "branch")).select_by_value("transformer")
    assert not cnn.is_displayed() and transformer.is_displayed()
    cells = browser.find_elements(By.CSS_SELECTOR, "#matrix canvas")
    keys = [c.get_attribute("data-key") for c in cells]
    block = browser.find_element(By.ID, "block-value").text
    assert keys == [f"gradcam/{h}/{b}/{block}" for h in ("fused", "cnn", "transformer")
                    for b in ("cnn", "transformer")]
    shows(browser, cells[3], maps, f"gradcam/cnn/transformer/{block}")

    opacity = browser.find_element(By.ID, "opacity")
    opacity.send_keys(Keys.END)
    assert float(transformer.value_of_css_property("opacity")) == 1.0
    browser.find_element(By.ID, "next-image").click()  # the view carries over to the next image
    visit(browser, site / "images" / "0001.html", "#viewer")
    assert browser.find_element(By.ID, "prev-image").is_displayed()


def test_store_pages_step_through_the_stored_blocks(browser, dataset_site):
    from selenium.webdriver.common.by import By
    from selenium.webdriver.common.keys import Keys

    _, site, _ = dataset_site
    rows = index_rows(site)
    good = next(i for i, r in enumerate(rows) if not r["error"])
    bad = next(i for i, r in enumerate(rows) if r["error"])
    maps = site_maps(site, f"{good:04d}")
    visit(browser, site / "images" / f"{good:04d}.html", "#viewer")
    cnn = browser.find_element(By.CSS_SELECTOR, '.panel[data-branch="cnn"] canvas')
    shows(browser, cnn, maps, "gradcam/fused/cnn/12")
    browser.find_element(By.ID, "block").send_keys(Keys.ARROW_LEFT)  # --blocks 1,6,12
    shows(browser, cnn, maps, "gradcam/fused/cnn/6")
    browser.get_log("browser")
    browser.get((site / "images" / f"{bad:04d}.html").as_uri())
    assert "no maps" in browser.find_element(By.ID, "error").text
    assert [e for e in browser.get_log("browser") if e["level"] in ("SEVERE", "ERROR")] == []
    visit(browser, site / "index.html", "#images")
    shown = browser.find_elements(By.CSS_SELECTOR, "#images tbody tr")
    assert len(shown) == 3


def test_audio_pages_unfold_the_spectrogram(browser, meta_site):
    from selenium.webdriver.common.by import By

    maps = site_maps(meta_site, "0000")
    visit(browser, meta_site / "images" / "0000.html", "#viewer")
    cnn = browser.find_element(By.CSS_SELECTOR, '.panel[data-branch="cnn"] canvas.heat')
    picture = browser.find_element(By.CSS_SELECTOR, '.panel[data-branch="cnn"] canvas.picture')
    assert (cnn.get_attribute("width"), cnn.get_attribute("height")) == ("256", "64")
    # (a canvas with a file:// image drawn on it is tainted: its pixels cannot be read back)
    assert picture.get_attribute("data-drawn") == "1"
    assert (picture.get_attribute("width"), picture.get_attribute("height")) == ("256", "64")
    key = cnn.get_attribute("data-key")
    folded = expected_rgb(maps[key], (128, 128))
    halves = [folded[k * 64:(k + 1) * 64][::-1] for k in range(2)]  # low bands at the bottom
    expected = np.concatenate(halves, axis=1)
    got = canvas_rgb(browser, cnn).astype(np.float32)
    assert np.abs(got - expected).mean() < 8
    assert np.abs(got - expected_rgb(maps[key], (64, 256))).mean() > 2 * np.abs(
        got - expected).mean()  # not merely stretched
    ticks = [t.text for t in browser.find_elements(By.CSS_SELECTOR, ".panel .xaxis span")]
    assert "0 s" in ticks and "kHz" in browser.find_element(By.CSS_SELECTOR, ".yaxis").text


def test_index_sorts_filters_and_pages(browser, big_site):
    from selenium.webdriver.common.by import By
    from selenium.webdriver.support.ui import Select

    _, site = big_site
    rows = index_rows(site)
    visit(browser, site / "index.html", "#images")

    def shown_ids() -> list[str]:
        return [tr.get_attribute("data-id")
                for tr in browser.find_elements(By.CSS_SELECTOR, "#images tbody tr")]

    info = browser.find_element(By.ID, "page-info")
    assert shown_ids() == [r["id"] for r in rows[:50]]
    assert info.text.startswith("1–50 of 120 images")
    browser.find_element(By.ID, "next-page").click()
    assert shown_ids() == [r["id"] for r in rows[50:100]]
    browser.find_element(By.ID, "next-page").click()
    assert shown_ids() == [r["id"] for r in rows[100:]]
    assert browser.find_element(By.ID, "next-page").get_attribute("disabled") is not None

    header = browser.find_element(By.CSS_SELECTOR, 'th[data-key="prob_fused"]')
    header.find_element(By.TAG_NAME, "button").click()
    ascending = sorted(rows, key=lambda r: r["prob_fused"])
    assert header.get_attribute("aria-sort") == "ascending"
    assert shown_ids() == [r["id"] for r in ascending[:50]]  # sorted over all rows, page 1
    header.find_element(By.TAG_NAME, "button").click()
    assert header.get_attribute("aria-sort") == "descending"
    assert shown_ids()[0] == max(rows, key=lambda r: r["prob_fused"])["id"]

    Select(browser.find_element(By.ID, "agree-filter")).select_by_value("disagree")
    disagree = [r for r in rows if r["agree"] is False]
    assert info.text.startswith(f"1–{min(50, len(disagree))} of {len(disagree)} images")
    Select(browser.find_element(By.ID, "agree-filter")).select_by_value("all")
    query = browser.find_element(By.ID, "query")
    query.send_keys("star/img_")
    stars = [r for r in rows if "star/img_" in r["file"]]
    assert sorted(shown_ids()) == sorted(r["id"] for r in stars)
    Select(browser.find_element(By.ID, "page-size")).select_by_value("25")
    query.clear()
    query.send_keys(" ")  # an input event with an empty query: every row again
    assert len(shown_ids()) == 25 and "of 120 images" in info.text
    first = browser.find_element(By.CSS_SELECTOR, "#images tbody tr a")
    target = first.get_attribute("href")
    first.click()
    assert browser.current_url.split("#")[0] == target and target.endswith(".html")


def test_report_benchmark_runs_and_writes_its_json(tmp_path):
    proc = subprocess.run([sys.executable, "-m", "benchmarks.report_build", "--images", "12",
                           "--grid-scale", "0.25", "--out", str(tmp_path / "results"),
                           "--work", str(tmp_path / "work")],
                          cwd=ROOT, capture_output=True, text=True, timeout=600)
    assert proc.returncode == 0, proc.stderr
    (file,) = (tmp_path / "results").glob("report_build_12_*.json")
    data = json.loads(file.read_text())
    assert data["benchmark"] == "report_build" and data["config"]["images"] == 12
    assert data["config"]["map_keys"] == 112 and data["config"]["maps"] == 12 * 112
    assert data["build_s"] > 0 and data["machine"]["logical_cores"] >= 1
    assert data["site"]["files"] == 12 * 4 + 7  # page, picture, thumbnail, maps per image
    assert len(list((tmp_path / "work" / "site" / "images").glob("*.jpg"))) == 12
