# sam3d — the two everyday commands are `make book` and `make test`.
# Everything runs in a local virtual environment (.venv), created on first use.
# torch/torchvision are pinned by constraints.txt, which every pip install receives.

VENV := .venv
PY := $(VENV)/bin/python
STAMP := $(VENV)/.installed

.PHONY: venv test book clean bench

venv: $(STAMP)

# Re-installs when pyproject.toml or constraints.txt change.
$(STAMP): pyproject.toml constraints.txt
	test -x $(PY) || python3 -m venv $(VENV)
	$(PY) -m pip install -c constraints.txt -e '.[test,book]'
	touch $@

test: $(STAMP)
	$(PY) -m pytest

# Builds the HTML book into _build/html, executing notebooks (results cached in
# _build/.jupyter_cache). -W: any warning fails the build; --keep-going: report them all;
# --all: re-read every page so warnings of unchanged pages are reported again.
book: $(STAMP)
	$(VENV)/bin/jupyter-book build . -W --keep-going --all

bench: $(STAMP)
	$(VENV)/bin/sam3d bench

clean:
	rm -rf _build
