# freres-lmms: `make help` lists the targets.
PYTHON ?= $(shell command -v python3.11 || command -v python3)
VENV := .venv
BIN := $(VENV)/bin
STAMP := $(VENV)/.install-stamp

.DEFAULT_GOAL := help
.PHONY: help install lock test demo profile checkpoints synthetic synthetic-long train-testbed train-adapters testbed-table ci-regression gpu-check clean

help: ## list the targets
	@grep -hE '^[a-zA-Z%_-]+:.*## ' $(MAKEFILE_LIST) | awk 'BEGIN{FS=":.*## "}{printf "  %-18s %s\n", $$1, $$2}'

install: $(STAMP) ## create .venv and install freres-lmms with its pinned dependencies (idempotent)

$(STAMP): pyproject.toml constraints.txt
	test -x $(BIN)/python || $(PYTHON) -m venv $(VENV)
	$(BIN)/pip install -q -c constraints.txt -e ".[test]"
	touch $(STAMP)

lock: ## re-resolve the dependencies and pin every installed distribution in constraints.txt
	test -x $(BIN)/python || $(PYTHON) -m venv $(VENV)
	$(BIN)/pip install -q --upgrade -e ".[test]"
	{ sed -n '1,2p' constraints.txt; $(BIN)/pip freeze --exclude-editable; } > constraints.txt.new && mv constraints.txt.new constraints.txt
	touch $(STAMP)

test: install ## run the test suite (CPU, tiny local checkpoints)
	$(BIN)/python -m pytest -q

demo: install ## build what is missing, evaluate full vs uniform on the synthetic task, print the table
	$(BIN)/python -m freres_lmms demo

checkpoints: install ## write the tiny checkpoints of all three families to checkpoints/
	$(BIN)/python -m freres_lmms checkpoints

synthetic: install ## generate the synthetic video task's data
	$(BIN)/python -m freres_lmms synthetic

synthetic-long: install ## generate the long-clip task's data (300 clips of 128 frames; ARGS="--seed N" a fresh split)
	$(BIN)/python -m freres_lmms synthetic --task long $(ARGS)

train-adapters: install ## train Fre-Res's adapters, backbone frozen: make train-adapters ARGS="pretrained=... data=... method.budget=0.1"
	$(BIN)/python scripts/train_adapters.py $(ARGS)

train-testbed: install ## train a testbed model on one GPU (8.6 min): make train-testbed ARGS="testbed=qwen3vl"
	$(BIN)/python scripts/train_testbed.py $(ARGS)

testbed-table: install ## accuracy per question type, every method at 50/25/10% of tokens -> results/testbed.md (ARGS="--task long": + 5%, curves png)
	$(BIN)/python scripts/testbed_table.py $(ARGS)

ci-regression: install ## every method on the testbed vs results/regression/baseline.json (ARGS=--update); benchmark=B model=M limit=N: a benchmark subset
	$(BIN)/python -m freres_lmms regression $(if $(benchmark),benchmark=$(benchmark)) $(if $(model),model=$(model)) $(if $(limit),limit=$(limit)) $(ARGS)

reproduce-table%: install ## regenerate a paper table: make reproduce-table2 [ARGS="model=tiny benchmark=synthetic"] -> results/tables/
	$(BIN)/python scripts/reproduce_table.py table=$* $(ARGS)

profile: install ## Fre-Res Table 3 on one GPU: tokens, stage times, TTFT, peak memory -> results/table3.* [ARGS="rows=[freres]"]
	$(BIN)/python scripts/profile_table3.py $(ARGS)

clean: ## remove generated checkpoints, synthetic data and outputs (keeps .venv)
	rm -rf checkpoints outputs task_configs/freres_synthetic/data
