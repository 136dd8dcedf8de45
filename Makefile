# msm — the two commands a newcomer needs (`make run`, `make test`) and a few more.
# Everything real lives in CMake; this file installs dependencies and drives it.

JOBS      ?= 2
BUILD     ?= build
ASAN_DIR  ?= build-asan
BENCH_DIR ?= build-bench
FUZZ_DIR  ?= build-fuzz
FUZZ_SECONDS ?= 60
CMAKE_FLAGS ?=

.PHONY: all deps build run test test-asan bench fuzz clean format

all: build

deps:
	@scripts/install-deps.sh

$(BUILD)/CMakeCache.txt: | deps
	cmake -S . -B $(BUILD) -DCMAKE_BUILD_TYPE=RelWithDebInfo $(CMAKE_FLAGS)

build: deps $(BUILD)/CMakeCache.txt
	cmake --build $(BUILD) -j$(JOBS)

run: build
	@scripts/run.sh

test: build
	cd $(BUILD) && ctest --output-on-failure --timeout 600 $(CTEST_FLAGS)

test-asan: deps
	cmake -S . -B $(ASAN_DIR) -DCMAKE_BUILD_TYPE=Debug -DMSM_SANITIZE="address;undefined" $(CMAKE_FLAGS)
	cmake --build $(ASAN_DIR) -j$(JOBS)
	cd $(ASAN_DIR) && ASAN_OPTIONS=detect_leaks=1:abort_on_error=1 \
	    UBSAN_OPTIONS=print_stacktrace=1:halt_on_error=1 \
	    ctest --output-on-failure --timeout 900 $(CTEST_FLAGS)

bench: deps
	cmake -S . -B $(BENCH_DIR) -DCMAKE_BUILD_TYPE=Release $(CMAKE_FLAGS)
	cmake --build $(BENCH_DIR) -j$(JOBS) --target msm-bench-stream msm-bench-publish \
	    msm-bench-pipeline msm-kafka-mock
	$(BENCH_DIR)/bench/msm-bench-stream
	$(BENCH_DIR)/bench/msm-bench-publish $(BENCH_DIR)/frontend/msm-frontend
	$(BENCH_DIR)/bench/msm-bench-publish -k $(BENCH_DIR)/tools/msm-kafka-mock/msm-kafka-mock \
	    $(BENCH_DIR)/frontend/msm-frontend json
	$(BENCH_DIR)/bench/msm-bench-pipeline $(BENCH_DIR)/frontend/msm-frontend \
	    $(BENCH_DIR)/scheduler/msm-scheduler $(BENCH_DIR)/flowcontrol/msm-flowcontrol \
	    $(BENCH_DIR)/router/msm-router $(BENCH_DIR)/lambda-sdk/msm-example-lambda \
	    $(BENCH_DIR)/tools/msm-kafka-mock/msm-kafka-mock

# libFuzzer needs clang; CC only counts when $(FUZZ_DIR) is configured the first time.
# FUZZ_SECONDS (default 60) per target; docs/fuzzing.md.
fuzz: deps
	@command -v clang >/dev/null || { echo "make fuzz needs clang (libFuzzer): apt-get install clang" >&2; exit 1; }
	CC=clang cmake -S . -B $(FUZZ_DIR) -DCMAKE_BUILD_TYPE=RelWithDebInfo -DMSM_FUZZ=ON \
	    -DMSM_BUILD_TESTS=OFF $(CMAKE_FLAGS)
	cmake --build $(FUZZ_DIR) -j$(JOBS) --target msm-fuzz
	FUZZ_SECONDS=$(FUZZ_SECONDS) scripts/fuzz.sh $(FUZZ_DIR)

format:
	clang-format -i $$(git ls-files '*.c' '*.h')

clean:
	rm -rf $(BUILD) $(ASAN_DIR) $(BENCH_DIR) $(FUZZ_DIR)
