# The two commands a new machine needs: `make demo` and `make test`. Each sets up everything it uses.
PYTHON ?= python3
VENV   := .venv
BIN    := $(VENV)/bin
STAMP  := $(VENV)/.installed-test

.PHONY: demo test lint system-deps serve bench model clean

$(STAMP): pyproject.toml
	@test -x $(BIN)/python || $(PYTHON) -m venv $(VENV)
	$(BIN)/python -m pip install -q --upgrade pip
	$(BIN)/python -m pip install -q -e ".[test]"
	@touch $(STAMP)

system-deps:
	@bash scripts/system_deps.sh

demo: $(STAMP) system-deps
	$(BIN)/callgate demo

test: $(STAMP) system-deps
	$(BIN)/ruff check .
	$(BIN)/python -m pytest -q

lint: $(STAMP)
	$(BIN)/ruff check .

serve: $(STAMP)
	$(BIN)/callgate serve

bench: $(STAMP) system-deps
	$(BIN)/python scripts/bench_replay.py

# Rebuild the AMD corpus (16000 synthetic calls, ~3 GB, ~45 min, git-ignored) and retrain amd_model/amd.onnx
# (three nets, two at a time, ~85 min on 2 cores, averaged into one ONNX graph: the 1.3.0 recipe), then
# refit its heads into 1.4.0 on a 3000-call corpus plus the 38 real greetings and 642 real-voice pickups
# (~2 min of corpus, ~40 min of fits; every figure of the refit is printed on the way).
model: $(STAMP) system-deps
	$(BIN)/python -m pip install -q -e ".[train]"
	nice $(BIN)/callgate train --corpus amd_model/corpus_data --n 16000 --seed 11 --workers 2 --members 3 --jobs 2 \
		--engines espeak-ng,flite
	$(BIN)/callgate corpus build --out amd_model/work/folds_s29 --n 3000 --seed 29 --real-pool all \
		--engines espeak-ng,flite
	$(BIN)/python -m amd_model.tools.real_humans --out amd_model/work/real_humans --seed 0
	nice $(BIN)/python -m amd_model.tools.head_refit amd_model/work/folds_s29 --humans amd_model/work/real_humans \
		--l2 1e-2 --real-weight 8 --human-weight 4 --human-folds 5 --export amd_model/amd.onnx --version 1.4.0

clean:
	rm -rf $(VENV) .pytest_cache .ruff_cache *.egg-info
