# Two commands: `make demo` (the main job) and `make test` (the whole suite). Both create the venv first.
PYTHON ?= python3.11
VENV ?= .venv
BIN := $(VENV)/bin
STAMP := $(VENV)/.installed
DEMO_OUT ?= demo_out
DEMO_ENCODER ?= anyloc_vlad

.PHONY: demo test venv bench clean interfaces

venv: $(STAMP)

$(STAMP): setup.py
	@command -v $(PYTHON) >/dev/null 2>&1 || { echo "need $(PYTHON) on PATH (or make PYTHON=python3)"; exit 2; }
	test -x $(BIN)/python || $(PYTHON) -m venv $(VENV)
	$(BIN)/python -m pip install --upgrade --quiet pip
	# torch first and pinned: it must take the CPU build, never a CUDA one.
	$(BIN)/python -m pip install --quiet torch==2.13.0
	$(BIN)/python -m pip install --quiet -e '.[ros,onnx,ray,test,slam]'
	touch $(STAMP)

# vpr_ros_interfaces (PlaceMatch, PlaceCandidates) built with the PyPI rosidl/ament_cmake wheels and
# installed into the venv; the node publishes them when importable. Needs cmake and a C/C++ compiler.
IFACE_SRC := interfaces/vpr_ros_interfaces
IFACE_STAMP := $(VENV)/.interfaces
interfaces: $(IFACE_STAMP)

$(IFACE_STAMP): $(STAMP) interfaces/requirements-build.txt interfaces/tf2_msgs/msg/TFMessage.msg $(IFACE_SRC)/CMakeLists.txt interfaces/cmake/pypi_wheel_includes.cmake $(IFACE_SRC)/package.xml $(wildcard $(IFACE_SRC)/msg/*.msg) $(wildcard $(IFACE_SRC)/srv/*.srv)
	@command -v cmake >/dev/null 2>&1 || { echo "make interfaces needs cmake and a C/C++ compiler"; exit 2; }
	$(BIN)/python -m pip install --quiet -r interfaces/requirements-build.txt
	rm -rf build/vpr_ros_interfaces && mkdir -p build
	AMENT_PREFIX_PATH=$(abspath $(VENV)) cmake -S $(IFACE_SRC) -B build/vpr_ros_interfaces \
	    -DCMAKE_PREFIX_PATH=$(abspath $(VENV)) -DCMAKE_INSTALL_PREFIX=$(abspath $(VENV)) \
	    -DPython3_EXECUTABLE=$(abspath $(BIN))/python -DBUILD_TESTING=OFF > build/vpr_ros_interfaces.log 2>&1 \
	    || { tail -20 build/vpr_ros_interfaces.log; exit 2; }
	AMENT_PREFIX_PATH=$(abspath $(VENV)) cmake --build build/vpr_ros_interfaces -j2 >> build/vpr_ros_interfaces.log 2>&1 \
	    || { tail -20 build/vpr_ros_interfaces.log; exit 2; }
	cmake --install build/vpr_ros_interfaces >> build/vpr_ros_interfaces.log 2>&1
	$(BIN)/python -c "from vpr_ros_interfaces.msg import PlaceCandidates, PlaceMatch; from vpr_ros_interfaces.srv import Localize"
	# tf2_msgs/TFMessage (the node's map -> odom on /tf) has no PyPI wheel: build it unless one is installed
	$(BIN)/python -c "import tf2_msgs.msg" 2>/dev/null || { \
	  rm -rf build/tf2_msgs && \
	  AMENT_PREFIX_PATH=$(abspath $(VENV)) cmake -S interfaces/tf2_msgs -B build/tf2_msgs \
	    -DCMAKE_PREFIX_PATH=$(abspath $(VENV)) -DCMAKE_INSTALL_PREFIX=$(abspath $(VENV)) \
	    -DPython3_EXECUTABLE=$(abspath $(BIN))/python -DBUILD_TESTING=OFF > build/tf2_msgs.log 2>&1 && \
	  AMENT_PREFIX_PATH=$(abspath $(VENV)) cmake --build build/tf2_msgs -j2 >> build/tf2_msgs.log 2>&1 && \
	  cmake --install build/tf2_msgs >> build/tf2_msgs.log 2>&1 && \
	  $(BIN)/python -c "from tf2_msgs.msg import TFMessage"; } || { tail -20 build/tf2_msgs.log; exit 2; }
	touch $(IFACE_STAMP)

demo: $(STAMP)
	$(BIN)/vpr-ros demo --out $(DEMO_OUT) --encoder $(DEMO_ENCODER)

test: $(STAMP) $(IFACE_STAMP)
	$(BIN)/python -m pytest -q test

bench: $(STAMP)
	$(BIN)/python benchmarks/bench_encoders.py

clean:
	rm -rf $(VENV) $(DEMO_OUT) build install log *.egg-info
