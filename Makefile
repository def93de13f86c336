# `make test`  : create/refresh .venv from the repo's pinned files, then run the whole test suite offline.
# `make demo`  : same install, then the whole product end to end on the embedded world (see README).
# `make lint`  : ruff (style, import order) and lint-imports (the package layering), both configured in pyproject.toml.
# `make study` : after `make demo`: each sampler variant x seed trained and evaluated (docs/evaluation.md).
# `make flywheel`: after `make demo`: Serve, simulated shoppers, their log imported, one flywheel turn under load
#                (docs/flywheel.md); FLYWHEEL_ARGS="--requests 3000 --threads 8" for more traffic.
PY      ?= python3.11
VENV    ?= .venv
BIN     := $(VENV)/bin
STAMP   := $(VENV)/.installed
WORKDIR ?= runs/embedded
CONFIG  ?= configs/embedded.yaml
PYTEST_ARGS ?=

.PHONY: install test test-fast lint demo study flywheel world clean-runs lock

$(BIN)/python:
	$(PY) -m venv $(VENV) || python3 -m venv $(VENV)

# Reinstall only when the pins or the project metadata change. vendor/emoji: the world's Noto, Twemoji and
# Fluent Emoji drawings (npm Iconify JSON sets, pinned by the lockfile; see distill/data/emoji_sets.py).
$(STAMP): requirements.lock pyproject.toml vendor/emoji/package-lock.json | $(BIN)/python
	$(BIN)/pip install --disable-pip-version-check -q -r requirements.lock
	$(BIN)/pip install --disable-pip-version-check -q --no-deps -e .
	npm ci --prefix vendor/emoji --no-audit --no-fund
	touch $(STAMP)

install: $(STAMP)

test: install
	HF_HUB_OFFLINE=1 $(BIN)/python -m pytest -q $(PYTEST_ARGS)

test-fast: install
	HF_HUB_OFFLINE=1 $(BIN)/python -m pytest -q -m "not slow" $(PYTEST_ARGS)

# Both checks run even when the first fails; either failing fails the target.
lint: install
	@rc=0; $(BIN)/ruff check . || rc=1; $(BIN)/lint-imports || rc=1; exit $$rc

demo: install
	HF_HUB_OFFLINE=1 PATH=$(abspath $(BIN)):$$PATH bash scripts/demo.sh $(CONFIG) $(WORKDIR)

study: install
	HF_HUB_OFFLINE=1 RAY_USAGE_STATS_ENABLED=0 $(BIN)/distill study --config $(CONFIG) --set paths.workdir=$(WORKDIR) $(STUDY_ARGS)

# Loopback-only: token auth off, as scripts/demo.sh does for its cluster.
flywheel: install
	HF_HUB_OFFLINE=1 RAY_USAGE_STATS_ENABLED=0 RAY_AUTH_MODE=disabled $(BIN)/python scripts/flywheel_demo.py \
		--config $(CONFIG) --set paths.workdir=$(WORKDIR) $(FLYWHEEL_ARGS)

world: install
	$(BIN)/distill world build --out $(WORKDIR)/world

# Regenerate requirements.lock from requirements.in in a scratch venv (needs PyPI).
lock:
	rm -rf /tmp/distill-lock-venv && $(PY) -m venv /tmp/distill-lock-venv
	/tmp/distill-lock-venv/bin/pip install -q -r requirements.in
	/tmp/distill-lock-venv/bin/pip freeze > requirements.lock

clean-runs:
	rm -rf runs/
