# The libtorch-based library, the CLI, and their tests.
set(TITAN_SOURCES
  titan/common/log.cpp
  titan/kernels/fused_ops.cpp
  titan/models/llama3/args.cpp
  titan/models/llama3/model.cpp
  titan/models/llama3/parallelize.cpp
  titan/distributed/activation_checkpoint.cpp
  titan/distributed/data_parallel.cpp
  titan/distributed/flight_recorder.cpp
  titan/distributed/parallel_dims.cpp
  titan/distributed/process_group.cpp
  titan/distributed/process_group_nccl.cpp
  titan/components/data.cpp
  titan/components/device.cpp
  titan/components/loss.cpp
  titan/components/metrics.cpp
  titan/components/profiling.cpp
  titan/components/tensorboard.cpp
  titan/components/lr_scheduler.cpp
  titan/components/optimizer.cpp
  titan/train/trainer.cpp
  titan/train/validate.cpp
)
if(TITAN_HAVE_CUDA)
  list(APPEND TITAN_SOURCES titan/components/device_cuda.cpp)
else()
  list(APPEND TITAN_SOURCES titan/components/device_nocuda.cpp)
endif()

add_library(titan_lib STATIC ${TITAN_SOURCES})
target_include_directories(titan_lib PUBLIC ${CMAKE_CURRENT_SOURCE_DIR})
target_link_libraries(titan_lib PUBLIC titan_config titan_text torch_libs)

add_executable(titan apps/titan.cpp apps/cmd_tokenizer.cpp apps/cmd_data.cpp)
target_link_libraries(titan PRIVATE titan_lib)

# Unit tests: one executable, so libtorch is linked once.
add_executable(titan_tests
  tests/unit/test_model.cpp
  tests/unit/test_training.cpp
  tests/unit/test_distributed_units.cpp
  tests/unit/test_observability_units.cpp
  tests/unit/test_kernels.cpp
  tests/unit/test_precision.cpp
  tests/unit/test_data.cpp
)
target_link_libraries(titan_tests PRIVATE titan_lib GTest::gtest_main)
target_compile_definitions(titan_tests PRIVATE TITAN_SOURCE_DIR="${CMAKE_CURRENT_SOURCE_DIR}")
include(GoogleTest)
gtest_discover_tests(titan_tests DISCOVERY_TIMEOUT 120 PROPERTIES LABELS unit ENVIRONMENT "OMP_NUM_THREADS=1")

# Writes the C++ side of the Python parity check.
add_executable(parity_dump tests/parity/parity_dump.cpp)
target_link_libraries(parity_dump PRIVATE titan_lib)

add_executable(bench_train_step bench/bench_train_step.cpp)
target_link_libraries(bench_train_step PRIVATE titan_lib)

# Python-driven tests: parity against PyTorch and the command line. Exit 77 = skipped.
add_test(NAME parity.model COMMAND ${Python3_EXECUTABLE} ${CMAKE_CURRENT_SOURCE_DIR}/tests/parity/test_model_parity.py
         --dump-bin $<TARGET_FILE:parity_dump>)
add_test(NAME parity.reference_selfcheck COMMAND ${Python3_EXECUTABLE} ${CMAKE_CURRENT_SOURCE_DIR}/tests/parity/test_ref_selfcheck.py)
add_test(NAME integration.cli COMMAND ${Python3_EXECUTABLE} ${CMAKE_CURRENT_SOURCE_DIR}/tests/integration/test_cli.py
         --titan $<TARGET_FILE:titan> --shared ${CMAKE_CURRENT_SOURCE_DIR}/../shared)
add_test(NAME parity.tokenizer COMMAND ${Python3_EXECUTABLE} ${CMAKE_CURRENT_SOURCE_DIR}/tests/parity/test_tokenizer_parity.py
         --titan $<TARGET_FILE:titan> --shared ${CMAKE_CURRENT_SOURCE_DIR}/../shared)
set_tests_properties(parity.model parity.reference_selfcheck parity.tokenizer integration.cli PROPERTIES
                     SKIP_RETURN_CODE 77 ENVIRONMENT "OMP_NUM_THREADS=1")
add_test(NAME integration.distributed COMMAND ${Python3_EXECUTABLE} ${CMAKE_CURRENT_SOURCE_DIR}/tests/integration/test_distributed.py
         --titan $<TARGET_FILE:titan>)
# Up to 4 processes of one thread each: run it alone.
set_tests_properties(integration.distributed PROPERTIES RUN_SERIAL TRUE TIMEOUT 900)
add_test(NAME integration.data COMMAND ${Python3_EXECUTABLE} ${CMAKE_CURRENT_SOURCE_DIR}/tests/integration/test_data.py
         --titan $<TARGET_FILE:titan> --shared ${CMAKE_CURRENT_SOURCE_DIR}/../shared)
set_tests_properties(integration.data PROPERTIES SKIP_RETURN_CODE 77 ENVIRONMENT "OMP_NUM_THREADS=1" TIMEOUT 900)
add_test(NAME integration.observability COMMAND ${Python3_EXECUTABLE} ${CMAKE_CURRENT_SOURCE_DIR}/tests/integration/test_observability.py
         --titan $<TARGET_FILE:titan>)
set_tests_properties(integration.observability PROPERTIES RUN_SERIAL TRUE TIMEOUT 900)

add_executable(bench_tokenizer bench/bench_tokenizer.cpp)
target_link_libraries(bench_tokenizer PRIVATE titan_text)
