# Two set-up commands: `make demo` and `make test`. Both create .venv when it is missing.
PYTHON ?= python3
VENV := .venv
BIN := $(VENV)/bin
STAMP := $(VENV)/.installed

.PHONY: demo test lint notebooks notebooks-sync bench clean venv

venv: $(STAMP)

$(STAMP): pyproject.toml
	test -x $(BIN)/python || $(PYTHON) -m venv $(VENV)
	$(BIN)/python -m pip install --upgrade pip
	# pip takes torch/torchvision from this machine's disk where available (see README).
	$(BIN)/python -m pip install -e '.[dev,audio]'
	# Quantus (metric cross-checks in the tests) without its opencv-python requirement
	$(BIN)/python -m pip install --no-deps 'quantus>=0.6'
	# lxt (AttnLRP rules, cross-check of lrp on ViT) without transformers, accelerate,
	# bitsandbytes and open_clip, which it requires but its rule modules do not import
	$(BIN)/python -m pip install --no-deps 'lxt==2.1'
	touch $(STAMP)

demo: $(STAMP)
	$(BIN)/conformer-xai explain examples/scenes --model conformer_micro_patch16 --weights embedded --out out/ --report --force
	$(BIN)/conformer-xai compare examples/scenes/scene_000.png --weights embedded --out out/compare --force
	# the two bundled sound scenes, with the embedded spectrogram model (the default for audio)
	$(BIN)/conformer-xai explain examples/sounds --out out/sounds --force

test: $(STAMP)
	$(BIN)/ruff check .
	$(BIN)/python -m pytest -n 2 --dist loadfile -q

lint: $(STAMP)
	$(BIN)/ruff check .

notebooks: $(STAMP)
	mkdir -p out
	$(BIN)/jupyter nbconvert --to html --execute --output-dir out/ notebooks/*.ipynb

# the notebooks' sources are notebooks/*.py (jupytext percent format): after editing one, this
# rewrites the paired .ipynb (cells only; the .ipynb files are committed without outputs)
notebooks-sync: $(STAMP)
	$(BIN)/jupytext --sync notebooks/*.py

bench: $(STAMP)
	$(BIN)/python -m benchmarks

clean:
	rm -rf out build dist *.egg-info .pytest_cache .ruff_cache
