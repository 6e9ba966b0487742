# Everything runs from a virtual environment in .venv/, created on first use.
PYTHON ?= python3
VENV := .venv
BIN := $(VENV)/bin
STAMP := $(VENV)/.installed-stamp

.PHONY: demo test test-fast build bench calibrate doctor docker docker-cuda podman clean

$(STAMP): pyproject.toml
	@# bubblewrap gives workers a minimal read-only view of the machine; without it the sandbox falls
	@# back to unshare (see `autograder doctor`). Installed when we are root on a Debian-like system.
	@command -v bwrap >/dev/null || { [ "$$(id -u)" = 0 ] && command -v apt-get >/dev/null && \
		{ apt-get install -y -qq bubblewrap >/dev/null 2>&1 || \
		  { apt-get update -qq >/dev/null && apt-get install -y -qq bubblewrap >/dev/null; }; }; } || \
		echo "note: bubblewrap is not installed; workers get the unshare fallback"
	@# Headless Chromium opens the generated HTML pages (class report, feedback) in the tests, to catch console
	@# errors; without it those tests skip and say so. Installed the same way as bubblewrap.
	@command -v chromium >/dev/null || { [ "$$(id -u)" = 0 ] && command -v apt-get >/dev/null && \
		{ apt-get install -y -qq chromium >/dev/null 2>&1 || \
		  { apt-get update -qq >/dev/null && apt-get install -y -qq chromium >/dev/null; }; }; } || \
		echo "note: chromium is not installed; the browser tests of the HTML pages skip"
	$(PYTHON) -m venv $(VENV)
	$(BIN)/python -m pip install --quiet --upgrade pip
	$(BIN)/python -m pip install --quiet -e '.[dev,cluster]'
	touch $(STAMP)

## build: source/ -> release/ and solutions/ for every assignment
build: $(STAMP)
	$(BIN)/autograder build

## demo: build, then grade the bundled examples of every unit and print the class summaries
demo: build
	$(BIN)/autograder grade u1_backprop examples/u1_backprop --out autograded/demo-u1_backprop --workers 2 --call-seconds 3
	$(BIN)/autograder grade u2_cnn examples/u2_cnn --out autograded/demo-u2_cnn --workers 2 --call-seconds 3
	$(BIN)/autograder grade u3_attention examples/u3_attention --out autograded/demo-u3_attention --workers 2 --call-seconds 3
	$(BIN)/autograder grade u4_recsys examples/u4_recsys --out autograded/demo-u4_recsys --workers 2 --call-seconds 3

## test: the whole suite (engine, build, course, attacks, student self-check)
test: $(STAMP)
	$(BIN)/python -m pytest

## test-fast: everything but the tests marked slow
test-fast: $(STAMP)
	$(BIN)/python -m pytest -m "not slow"

## bench: a class of 200 of the heaviest unit (15 to 25 min here), next to nbgrader autograde and otter run
bench: $(STAMP)
	$(BIN)/pip install -q 'otter-grader>=6'
	$(BIN)/python bench/grading_throughput.py

## calibrate: timing-check ratios of every unit's solution over repeated runs
calibrate: $(STAMP)
	$(BIN)/autograder calibrate u1_backprop --runs 10
	$(BIN)/autograder calibrate u2_cnn --runs 10
	$(BIN)/autograder calibrate u3_attention --runs 10
	$(BIN)/autograder calibrate u4_recsys --runs 10

## doctor: which sandbox layers this machine gives the workers, verified, and their start-up cost
doctor: $(STAMP)
	$(BIN)/autograder doctor
	$(BIN)/python bench/worker_startup.py

## docker: the grader's CPU image (podman or docker, whichever is here; podman set up first where neither is)
docker: $(STAMP)
	@command -v docker >/dev/null && docker info >/dev/null 2>&1 || $(MAKE) --no-print-directory podman
	bash docker/build.sh cpu

## docker-cuda: the CUDA image (several GB; see docker/Dockerfile.cuda)
docker-cuda: $(STAMP)
	@command -v docker >/dev/null && docker info >/dev/null 2>&1 || $(MAKE) --no-print-directory podman
	bash docker/build.sh cuda

## podman: install and configure podman (as root, Debian), with a debootstrapped base where no registry answers
podman:
	bash docker/setup-podman.sh --base

clean:
	rm -rf $(VENV) autograded gradebook.db .pytest_cache
