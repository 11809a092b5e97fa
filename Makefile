# The AI music generation system: one entry point for running, testing and measuring it.
# `make help` lists the targets. Works on a fresh Debian machine with `make -j1`.

PYTHON ?= python3
VENV ?= .venv
VPY := $(VENV)/bin/python
PYTEST_ARGS ?= --timeout=900

# The virtualenv is rebuilt (pip install re-run) only when one of these files changes.
REQUIREMENTS := requirements-dev.txt pyproject.toml \
	tmik_bgm_conditional_melody_generation/requirements.txt \
	tmik_make_vocal_mix/requirements.txt \
	app/requirements.txt
STAMP := $(VENV)/.requirements.stamp

# System packages: ffmpeg (MP3/OGG/M4A decoding, MP3 export), FluidSynth with a General-MIDI
# soundfont (rendering the evaluation set and MIDI previews), libsndfile, and Chromium (the
# browser test drives Debian's browser; nothing downloads one).
APT_PACKAGES := ffmpeg fluidsynth fluid-soundfont-gm libsndfile1 chromium fonts-liberation
SOUNDFONT_FILE ?= /usr/share/sounds/sf2/FluidR3_GM.sf2

.DEFAULT_GOAL := help
.PHONY: help venv system-deps run test eval bench train-chords train-melody lint clean

help: ## list the targets
	@echo "Targets:"
	@grep -E '^[a-zA-Z_-]+:.*## ' $(MAKEFILE_LIST) | \
		awk 'BEGIN {FS = ":.*## "}; {printf "  make %-12s %s\n", $$1, $$2}'
	@echo "Variables: PYTHON=$(PYTHON) (interpreter for the venv), VENV=$(VENV), PYTEST_ARGS='$(PYTEST_ARGS)'"

venv: $(STAMP) ## create .venv and install requirements-dev.txt (re-runs only when requirements change)

$(STAMP): $(REQUIREMENTS)
	@test -x $(VPY) || { \
		echo "Creating $(VENV) with $(PYTHON)"; \
		$(PYTHON) -m venv $(VENV) || { \
			echo "'$(PYTHON) -m venv' failed: on Debian install python3-venv (apt-get install -y python3-venv)"; \
			rm -rf $(VENV); exit 1; }; }
	$(VPY) -m pip install --quiet --disable-pip-version-check --upgrade pip
	$(VPY) -m pip install --quiet --disable-pip-version-check -r requirements-dev.txt
	# The project itself, editable, so the CLIs run from any folder inside the venv.
	$(VPY) -m pip install --quiet --disable-pip-version-check --no-deps -e .
	# numba's caches, compiled once here by one process: concurrent first use crashes (numba#10128).
	$(VPY) -m tmik_common.warmup
	@touch $@

system-deps: ## install ffmpeg, fluidsynth, a GM soundfont, libsndfile (and python3-venv) with apt if missing
	@missing=""; \
	command -v ffmpeg >/dev/null 2>&1 && command -v ffprobe >/dev/null 2>&1 || missing="$$missing ffmpeg"; \
	command -v fluidsynth >/dev/null 2>&1 || missing="$$missing fluidsynth"; \
	command -v chromium >/dev/null 2>&1 || missing="$$missing chromium"; \
	test -f "$(SOUNDFONT_FILE)" || missing="$$missing fluid-soundfont-gm"; \
	{ /sbin/ldconfig -p 2>/dev/null || ldconfig -p 2>/dev/null; } | grep -q 'libsndfile\.so' || missing="$$missing libsndfile1"; \
	packages="$(APT_PACKAGES)"; \
	if ! $(PYTHON) -c 'import ensurepip, venv' >/dev/null 2>&1; then \
		missing="$$missing python3-venv"; packages="$$packages python3-venv"; fi; \
	if [ -z "$$missing" ]; then \
		echo "system-deps: ffmpeg, fluidsynth, soundfont, libsndfile, chromium and venv support are present"; \
	elif [ "$$(id -u)" = "0" ] && command -v apt-get >/dev/null 2>&1; then \
		echo "system-deps: installing$$missing"; \
		export DEBIAN_FRONTEND=noninteractive; \
		apt-get update -q && apt-get install -y -q --no-install-recommends $$packages; \
	else \
		echo "system-deps: missing$$missing (not root or no apt-get, so not installing)."; \
		echo "  Install them with: sudo apt-get install -y $$packages"; \
		echo "  Continuing: MP3/OGG decoding and the evaluation need them; the rest works."; \
	fi

run: system-deps venv ## start the whole system on localhost (embedded mode); Ctrl-C stops it
	$(VPY) -m app.launcher

test: system-deps venv ## run the test suite
	$(VPY) -m pytest -q $(PYTEST_ARGS)

eval: system-deps venv ## measure analysis, melody, then vocal quality (pitch per octave, whole-song words, loudness, expression beside the old formula and human figures) on the evaluation and contemporary sets
	$(VPY) -m tmik_bgm_conditional_melody_generation.evaluation.eval_analysis
	$(VPY) -m tmik_bgm_conditional_melody_generation.evaluation.eval_melody
	$(VPY) -m tmik_make_vocal_mix.evaluation.eval_vocal

bench: system-deps venv ## measure analysis, melody and vocal speed on a 3-minute track, then the whole system under 20 uploads
	$(VPY) -m tmik_bgm_conditional_melody_generation.evaluation.bench_analysis
	$(VPY) -m tmik_bgm_conditional_melody_generation.evaluation.bench_melody
	$(VPY) -m tmik_make_vocal_mix.evaluation.bench_vocal
	$(VPY) -m app.bench

train-chords: system-deps venv ## retrain the shipped chord model (analysis/chord_model.npz), about 4 min
	$(VPY) -m tmik_bgm_conditional_melody_generation.evaluation.train_chords

train-melody: venv ## retrain the shipped melody checkpoint (checkpoints/getdiff_default.pt), about an hour
	$(VPY) -m tmik_bgm_conditional_melody_generation.training.train

lint: venv ## ruff check
	$(VPY) -m ruff check .

clean: ## remove .venv and caches (keeps shared_data, your jobs' files)
	rm -rf $(VENV) .pytest_cache .ruff_cache
	find . -path ./.git -prune -o -type d -name __pycache__ -prune -exec rm -rf {} +

.PHONY: docker-test
DOCKER_TEST_ARGS ?=
docker-test: system-deps venv ## build, run, scale, kill and tear down the Docker deployment (10-20 min; not in make test or CI)
	$(VPY) docker/docker_test.py $(DOCKER_TEST_ARGS)
