# The two README commands: `make test` and `make demo`. Each builds .venv when missing.
PYTHON ?= python3
VENV := .venv
VPY := $(abspath $(VENV))/bin/python
TORCH_SPEC ?= torch==2.13.0
PIP := $(VPY) -m pip install -q --disable-pip-version-check

# Real ROS 2 from wheels: ament index lookups need the venv as prefix; images need LARGE_DATA.
export AMENT_PREFIX_PATH := $(abspath $(VENV))
export FASTDDS_BUILTIN_TRANSPORTS ?= LARGE_DATA
export PYTHONUNBUFFERED := 1

PROJECT_FILES := setup.py setup.cfg package.xml $(shell find tim_core tim_fusion_ros launch config models resource -type f -not -name '*.pyc' 2>/dev/null)
INTERFACE_FILES := $(shell find interfaces -type f -not -path 'interfaces/build/*' 2>/dev/null)

.PHONY: venv test demo bench bench-smoke lint clean

venv: $(VENV)/.project

$(VENV)/.deps: requirements.txt
	@test -x $(VPY) || $(PYTHON) -m venv $(VENV)
	@echo "[make] installing torch ($(TORCH_SPEC)) and requirements.txt into $(VENV)"
	@$(PIP) "$(TORCH_SPEC)" 2>&1 | grep -v "is ignored: it is neither" || true
	@$(PIP) -r requirements.txt 2>&1 | grep -v "is ignored: it is neither" || true
	@$(VPY) -c "import torch, cv2, rclpy, safetensors, yaml, tqdm" || (echo "[make] dependency install failed"; exit 1)
	@touch $@

# vision_msgs comes from rosdep on a distro; here it is built from interfaces/ only when missing.
$(VENV)/.interfaces: $(VENV)/.deps $(INTERFACE_FILES)
	@$(VPY) -c "import vision_msgs" 2>/dev/null || bash interfaces/build.sh $(abspath $(VENV))
	@touch $@

$(VENV)/.project: $(VENV)/.interfaces $(PROJECT_FILES)
	@$(PIP) --no-deps --no-build-isolation . 2>&1 | grep -v "is ignored: it is neither" || true
	@rm -rf build *.egg-info
	@touch $@

test: venv
	$(VPY) -m pytest -q test

demo: venv
	$(VPY) -m tim_fusion_ros.demo --out out/demo

lint: venv
	@$(VPY) -m ruff --version >/dev/null 2>&1 || $(PIP) "ruff==0.17.6"
	$(VPY) -m ruff check .
	$(VPY) tools/import_graph.py

bench: venv
	$(VPY) bench/run_all.py

bench-smoke: venv
	$(VPY) bench/run_all.py --smoke

clean:
	rm -rf out build *.egg-info
