# Two commands on a fresh machine:  `make run` (set up, then run the whole DAG on ConceptWorld)
# and `make test` (set up, then run the tests). Setup happens once, into .venv.
VENV ?= .venv
BIN := $(VENV)/bin
CORES ?= all
export PATH := $(abspath $(BIN)):$(PATH)

.PHONY: setup browser run test test-fast prompts share bench clean

$(BIN)/.installed: pyproject.toml
	python3 -m venv $(VENV)
	$(BIN)/pip install --quiet --upgrade pip
	$(BIN)/pip install --quiet -e '.[test]'
	touch $@

setup: $(BIN)/.installed

run: setup
	snakemake --cores $(CORES)

# Headless Chromium renders Snakemake's HTML report in tests/test_views.py (which skips without it);
# installed from Debian's packages when running as root, as CI does.
browser:
	@command -v chromium >/dev/null || { [ "$$(id -u)" = 0 ] && apt-get update -qq && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq --no-install-recommends chromium >/dev/null; } || echo "no chromium: the HTML report test will be skipped"

test: setup browser
	pytest

test-fast: setup
	pytest -m "not slow"

# Regenerate ConceptWorld's shipped prompt files (after changing the world)
prompts: setup
	rm -rf data/prompts/conceptworld
	python -c "from eraselab.conceptworld.prompts import write_shipped_prompts; write_shipped_prompts()"

# Share artifacts through DVC (docs/hpc.md), once per clone:
#   make share REMOTE=/shared/lab/eraselab/dvc-remote CACHE=/shared/lab/eraselab/dvc-cache   (HPC)
#   make share REMOTE=s3://bucket/eraselab                                                    (S3)
share: setup
	scripts/share.sh "$(REMOTE)" $(if $(CACHE),"$(CACHE)")

# Time every stage against plain baselines (bench/README.md): bench/results/bench.{csv,md}.
# Baselines and eraselab run with the same THREADS.
THREADS ?= 2
bench: setup
	OMP_NUM_THREADS=$(THREADS) python -m bench

clean:
	rm -rf results resources logs .snakemake
