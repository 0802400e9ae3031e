# `make demo`: set up .venv and run the Muon-vs-AdamW demo, then serve its dashboard.
# `make test`: set up .venv and run the test suite (CPU only; the GPU tests skip).
# `make lint`: ruff, configured in pyproject.toml (CI runs it before the tests).
VENV := .venv
STAMP := $(VENV)/.installed-stamp

.PHONY: demo test lint install clean

install: $(STAMP)

$(STAMP): pyproject.toml scripts/install.sh
	bash scripts/install.sh
	touch $(STAMP)

demo: $(STAMP)
	$(VENV)/bin/parallax-probe demo --out runs/demo
	$(VENV)/bin/parallax-probe dashboard runs/demo

test: $(STAMP)
	$(VENV)/bin/pytest

lint: $(STAMP)
	$(VENV)/bin/ruff check .

clean:
	rm -rf $(VENV) build *.egg-info
