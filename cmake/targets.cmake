# The libtorch-based library, the CLI, and their tests.
# Every model family's folder (titan/models/<name>/), registered in titan/models/models.def.
file(GLOB TITAN_MODEL_SOURCES CONFIGURE_DEPENDS ${CMAKE_CURRENT_SOURCE_DIR}/titan/models/*/*.cpp)
set(TITAN_SOURCES
  ${TITAN_MODEL_SOURCES}
  titan/models/registry.cpp
  titan/generate/generator.cpp
  titan/common/counter_rng.cpp
  titan/common/log.cpp
  titan/kernels/attention_cpu.cpp
  titan/kernels/float8.cpp
  titan/kernels/mx.cpp
  titan/kernels/fused_ops.cpp
  titan/kernels/linear_cross_entropy.cpp
  titan/kernels/ops.cpp
  titan/distributed/activation_checkpoint.cpp
  titan/distributed/data_parallel.cpp
  titan/distributed/device_mesh.cpp
  titan/distributed/flight_recorder.cpp
  titan/distributed/placement.cpp
  titan/distributed/parallel_dims.cpp
  titan/distributed/pipeline_runtime.cpp
  titan/distributed/process_group.cpp
  titan/distributed/process_group_nccl.cpp
  titan/distributed/tensor_parallel.cpp
  titan/distributed/ring.cpp
  titan/distributed/context_parallel.cpp
  titan/distributed/expert_parallel.cpp
  titan/components/data/data.cpp
  titan/components/device/device.cpp
  titan/components/loss.cpp
  titan/components/metrics/metrics.cpp
  titan/components/metrics/profiling.cpp
  titan/components/metrics/tensorboard.cpp
  titan/components/optim/lr_scheduler.cpp
  titan/components/optim/optimizer.cpp
  titan/components/checkpoint/checkpoint.cpp
  titan/components/checkpoint/safetensors.cpp
  titan/components/checkpoint/dcp.cpp
  titan/components/checkpoint/pickle.cpp
  titan/components/checkpoint/hf_checkpoint.cpp
  titan/components/tokenizer/hf_tokenizer_export.cpp
  titan/common/folder_lock.cpp
  titan/common/test_hooks.cpp
  titan/train/pipeline.cpp
  titan/train/options.cpp
  titan/train/trainer.cpp
  titan/train/validate.cpp
  titan/train/hf_convert.cpp
)
if(TITAN_HAVE_CUDA)
  list(APPEND TITAN_SOURCES titan/components/device/device_cuda.cpp)
else()
  list(APPEND TITAN_SOURCES titan/components/device/device_nocuda.cpp)
endif()

# at::parallel_for is inline code over OpenMP in ATen's headers (torch's parallel backend): a file
# that calls it is compiled with OpenMP, or its loop runs on one thread.
find_package(OpenMP REQUIRED COMPONENTS CXX)
# The OpenMP runtime torch loads: the wheel's own libgomp.so.1 where it ships one (linking the
# system's beside it made CMake warn that one may hide the other), else the compiler's.
add_library(titan_openmp INTERFACE)
target_compile_options(titan_openmp INTERFACE $<$<COMPILE_LANGUAGE:CXX>:${OpenMP_CXX_FLAGS}>)
if(EXISTS ${_torch_libdir}/libgomp.so.1)
  find_package(Threads REQUIRED)
  target_link_libraries(titan_openmp INTERFACE ${_torch_libdir}/libgomp.so.1 Threads::Threads)
else()
  target_link_libraries(titan_openmp INTERFACE OpenMP::OpenMP_CXX)
endif()
set_source_files_properties(titan/kernels/attention_cpu.cpp titan/common/counter_rng.cpp PROPERTIES COMPILE_OPTIONS
                            "${OpenMP_CXX_FLAGS}")

# Fused CPU kernels: fused_cpu.cpp built once per CPU capability with the flags ATen uses for its
# own kernels; the library picks the one ATen dispatches to at run time (kernels/fused_ops.cpp).
set(_titan_cpu_caps DEFAULT)
set(_titan_cpu_flags_DEFAULT "")
if(CMAKE_SYSTEM_PROCESSOR MATCHES "x86_64|AMD64|amd64")
  list(APPEND _titan_cpu_caps AVX2 AVX512)
  set(_titan_cpu_flags_AVX2 -mavx2 -mfma -mf16c -DCPU_CAPABILITY_AVX2)
  set(_titan_cpu_flags_AVX512 -mavx512f -mavx512bw -mavx512vl -mavx512dq -mfma -mf16c -DCPU_CAPABILITY_AVX512)
endif()
set(_titan_kernel_objects "")
set(_titan_kernel_defs "")
foreach(cap IN LISTS _titan_cpu_caps)
  add_library(titan_kernels_cpu_${cap} OBJECT titan/kernels/cpu/fused_cpu.cpp)
  target_include_directories(titan_kernels_cpu_${cap} PRIVATE ${CMAKE_CURRENT_SOURCE_DIR})
  target_link_libraries(titan_kernels_cpu_${cap} PRIVATE torch_libs titan_openmp)
  target_compile_definitions(titan_kernels_cpu_${cap} PRIVATE CPU_CAPABILITY=${cap})
  # GCC 12 false positives inside headers at -O3: -Wmaybe-uninitialized in its own
  # avx512fintrin.h, -Warray-bounds in ATen's vec_base.h (the DEFAULT build, with sanitizers).
  target_compile_options(titan_kernels_cpu_${cap} PRIVATE -O3 -Wno-maybe-uninitialized -Wno-array-bounds
                         ${_titan_cpu_flags_${cap}})
  list(APPEND _titan_kernel_objects $<TARGET_OBJECTS:titan_kernels_cpu_${cap}>)
  list(APPEND _titan_kernel_defs TITAN_CPU_${cap})
endforeach()

add_library(titan_lib STATIC ${TITAN_SOURCES} ${_titan_kernel_objects})
target_include_directories(titan_lib PUBLIC ${CMAKE_CURRENT_SOURCE_DIR})
target_link_libraries(titan_lib PUBLIC titan_config titan_text torch_libs titan_openmp)
# libtorch's headers take about 9 s to parse in every translation unit: precompiled once for the
# library, and reused by every target that links it (titan_use_pch below). TITAN_PCH=OFF parses
# them each time.
option(TITAN_PCH "Precompile the libtorch headers the translation units include" ON)
if(TITAN_PCH)
  target_precompile_headers(titan_lib PRIVATE <ATen/ATen.h> <torch/csrc/autograd/custom_function.h>
                            <nlohmann/json.hpp> <functional> <map> <memory> <optional> <string> <vector>)
endif()
function(titan_use_pch)
  if(TITAN_PCH)
    foreach(target IN LISTS ARGN)
      target_precompile_headers(${target} REUSE_FROM titan_lib)
    endforeach()
  endif()
endfunction()
set_source_files_properties(titan/kernels/fused_ops.cpp PROPERTIES COMPILE_DEFINITIONS "${_titan_kernel_defs}")

# CUDA kernels: plain CUDA C++ (no torch headers), compiled here even without a GPU.
if(TITAN_HAVE_CUDA)
  if(NOT CMAKE_CUDA_ARCHITECTURES)
    set(CMAKE_CUDA_ARCHITECTURES "80-real;90")
  endif()
  if(CCACHE_PROGRAM)
    set(CMAKE_CUDA_COMPILER_LAUNCHER ${CCACHE_PROGRAM})
  endif()
  enable_language(CUDA)
  add_library(titan_kernels_cuda STATIC titan/kernels/cuda/fused_cuda.cu)
  target_include_directories(titan_kernels_cuda PRIVATE ${CMAKE_CURRENT_SOURCE_DIR})
  set_target_properties(titan_kernels_cuda PROPERTIES CUDA_STANDARD 17 CUDA_STANDARD_REQUIRED ON)
  target_compile_options(titan_kernels_cuda PRIVATE $<$<COMPILE_LANGUAGE:CUDA>:-Xcompiler=-Wall>)
  target_link_libraries(titan_lib PUBLIC titan_kernels_cuda)
endif()

# The command line as a library: the program is its main(), the unit tests call it in-process.
add_library(titan_cli STATIC apps/titan.cpp apps/cmd_tokenizer.cpp apps/cmd_data.cpp apps/cmd_convert.cpp
            apps/cmd_pp_schedule.cpp apps/cmd_generate.cpp)
target_link_libraries(titan_cli PUBLIC titan_lib)
target_include_directories(titan_cli PUBLIC ${CMAKE_CURRENT_SOURCE_DIR})
add_executable(titan apps/main.cpp)
target_link_libraries(titan PRIVATE titan_cli)

# Unit tests: one executable, so libtorch is linked once.
add_executable(titan_tests
  tests/unit/test_model.cpp
  tests/unit/test_training.cpp
  tests/unit/test_distributed_units.cpp
  tests/unit/test_observability_units.cpp
  tests/unit/test_kernels.cpp
  tests/unit/test_precision.cpp
  tests/unit/test_checkpointing.cpp
  tests/unit/test_data.cpp
  tests/unit/test_checkpoint_units.cpp
  tests/unit/test_pipeline_runtime.cpp
  tests/unit/test_gpu_readiness.cpp
  tests/unit/test_cli_usage.cpp
)
target_link_libraries(titan_tests PRIVATE titan_cli GTest::gtest_main)
target_compile_definitions(titan_tests PRIVATE TITAN_SOURCE_DIR="${CMAKE_CURRENT_SOURCE_DIR}")
include(GoogleTest)
gtest_discover_tests(titan_tests DISCOVERY_TIMEOUT 120 PROPERTIES LABELS unit ENVIRONMENT "OMP_NUM_THREADS=1")

# Writes the C++ side of the Python parity check.
add_executable(parity_dump tests/parity/parity_dump.cpp)
target_link_libraries(parity_dump PRIVATE titan_lib)

# Writes the C++ side of the float8 check against torchao.
add_executable(float8_dump tests/parity/float8_dump.cpp)
target_link_libraries(float8_dump PRIVATE titan_lib)

# Writes the C++ side of the MoE layer check against the PyTorch reference.
add_executable(moe_dump tests/parity/moe_dump.cpp)
target_link_libraries(moe_dump PRIVATE titan_lib)

# Writes the C++ side of the DeepSeek-V3 model check against the PyTorch reference.
add_executable(deepseek_dump tests/parity/deepseek_dump.cpp)
target_link_libraries(deepseek_dump PRIVATE titan_lib)

add_executable(bench_train_step bench/bench_train_step.cpp)
target_link_libraries(bench_train_step PRIVATE titan_lib)

# Python-driven tests: parity against PyTorch and the command line. Exit 77 = skipped.
add_test(NAME parity.model COMMAND ${Python3_EXECUTABLE} ${CMAKE_CURRENT_SOURCE_DIR}/tests/parity/test_model_parity.py
         --dump-bin $<TARGET_FILE:parity_dump>)
add_test(NAME parity.float8 COMMAND ${Python3_EXECUTABLE} ${CMAKE_CURRENT_SOURCE_DIR}/tests/parity/test_float8_parity.py
         --dump-bin $<TARGET_FILE:float8_dump>)
add_test(NAME parity.moe COMMAND ${Python3_EXECUTABLE} ${CMAKE_CURRENT_SOURCE_DIR}/tests/parity/test_moe_parity.py
         --dump-bin $<TARGET_FILE:moe_dump>)
add_test(NAME parity.deepseek COMMAND ${Python3_EXECUTABLE} ${CMAKE_CURRENT_SOURCE_DIR}/tests/parity/test_deepseek_parity.py
         --dump-bin $<TARGET_FILE:deepseek_dump>)
add_test(NAME parity.reference_selfcheck COMMAND ${Python3_EXECUTABLE} ${CMAKE_CURRENT_SOURCE_DIR}/tests/parity/test_ref_selfcheck.py)
add_test(NAME parity.training COMMAND ${Python3_EXECUTABLE} ${CMAKE_CURRENT_SOURCE_DIR}/tests/parity/test_training_parity.py
         --titan $<TARGET_FILE:titan>)
add_test(NAME integration.cli COMMAND ${Python3_EXECUTABLE} ${CMAKE_CURRENT_SOURCE_DIR}/tests/integration/test_cli.py
         --titan $<TARGET_FILE:titan>)
add_test(NAME parity.tokenizer COMMAND ${Python3_EXECUTABLE} ${CMAKE_CURRENT_SOURCE_DIR}/tests/parity/test_tokenizer_parity.py
         --titan $<TARGET_FILE:titan>)
set_tests_properties(parity.model parity.float8 parity.moe parity.deepseek parity.reference_selfcheck parity.training parity.tokenizer integration.cli PROPERTIES
                     SKIP_RETURN_CODE 77 ENVIRONMENT "OMP_NUM_THREADS=1")
add_test(NAME integration.distributed COMMAND ${Python3_EXECUTABLE} ${CMAKE_CURRENT_SOURCE_DIR}/tests/integration/test_distributed.py
         --titan $<TARGET_FILE:titan>)
# Up to 4 processes of one thread each: run it alone.
set_tests_properties(integration.distributed PROPERTIES RUN_SERIAL TRUE TIMEOUT 900)
add_test(NAME integration.data COMMAND ${Python3_EXECUTABLE} ${CMAKE_CURRENT_SOURCE_DIR}/tests/integration/test_data.py
         --titan $<TARGET_FILE:titan>)
set_tests_properties(integration.data PROPERTIES SKIP_RETURN_CODE 77 ENVIRONMENT "OMP_NUM_THREADS=1" TIMEOUT 900)
add_test(NAME integration.observability COMMAND ${Python3_EXECUTABLE} ${CMAKE_CURRENT_SOURCE_DIR}/tests/integration/test_observability.py
         --titan $<TARGET_FILE:titan>)
set_tests_properties(integration.observability PROPERTIES RUN_SERIAL TRUE TIMEOUT 900 SKIP_RETURN_CODE 77)

add_executable(bench_tokenizer bench/bench_tokenizer.cpp)
target_link_libraries(bench_tokenizer PRIVATE titan_text)

add_executable(bench_kernels bench/bench_kernels.cpp)
target_link_libraries(bench_kernels PRIVATE titan_lib)

add_executable(bench_documents bench/bench_documents.cpp)
target_link_libraries(bench_documents PRIVATE titan_lib)

add_executable(bench_moe bench/bench_moe.cpp)
target_link_libraries(bench_moe PRIVATE titan_lib)

# Tensor parallelism: the layouts, and (distributed_checks) the styles on 2 ranks against the
# unsharded computation and FSDP with several microbatch graphs alive.
add_executable(distributed_checks tests/integration/distributed_checks.cpp)
target_link_libraries(distributed_checks PRIVATE titan_lib)
add_test(NAME integration.tensor_parallel COMMAND ${Python3_EXECUTABLE} ${CMAKE_CURRENT_SOURCE_DIR}/tests/integration/test_tensor_parallel.py
         --titan $<TARGET_FILE:titan> --checks $<TARGET_FILE:distributed_checks>)
# Up to 4 processes of one thread each: run it alone.
set_tests_properties(integration.tensor_parallel PROPERTIES RUN_SERIAL TRUE TIMEOUT 900 SKIP_RETURN_CODE 77)

# Pipeline parallelism: every schedule and its compositions against one process, bad configs,
# a killed rank. Up to 8 processes of one thread each: run it alone.
add_test(NAME integration.pipeline COMMAND ${Python3_EXECUTABLE} ${CMAKE_CURRENT_SOURCE_DIR}/tests/integration/test_pipeline.py
         --titan $<TARGET_FILE:titan>)
set_tests_properties(integration.pipeline PROPERTIES RUN_SERIAL TRUE TIMEOUT 900)

# Checkpoints: exact resume after SIGKILL, resharding between layouts, damaged checkpoints.
add_test(NAME integration.checkpoint COMMAND ${Python3_EXECUTABLE} ${CMAKE_CURRENT_SOURCE_DIR}/tests/integration/test_checkpoint.py
         --titan $<TARGET_FILE:titan>)
# Up to 4 processes of one thread each: run it alone.
set_tests_properties(integration.checkpoint PROPERTIES RUN_SERIAL TRUE TIMEOUT 900)

# Hugging Face interop: our exports in transformers and theirs in titan.cpp, logits compared.
add_executable(hf_checks tests/integration/hf_checks.cpp)
target_link_libraries(hf_checks PRIVATE titan_lib)
add_test(NAME integration.hf COMMAND ${Python3_EXECUTABLE} ${CMAKE_CURRENT_SOURCE_DIR}/tests/integration/test_hf.py
         --titan $<TARGET_FILE:titan> --checks $<TARGET_FILE:hf_checks>)
set_tests_properties(integration.hf PROPERTIES SKIP_RETURN_CODE 77 ENVIRONMENT "OMP_NUM_THREADS=1" TIMEOUT 900)

# Qwen3 through the model registry: FSDP(2), TP(2), DDP(2), fused kernels and activation
# checkpointing against one process, exact resume, PP refused for the tied debug model. Two
# processes of one thread each.
add_test(NAME integration.qwen3 COMMAND ${Python3_EXECUTABLE} ${CMAKE_CURRENT_SOURCE_DIR}/tests/integration/test_qwen3.py
         --titan $<TARGET_FILE:titan>)
set_tests_properties(integration.qwen3 PROPERTIES ENVIRONMENT "OMP_NUM_THREADS=1" TIMEOUT 600)

# Float8 training: each recipe against high precision, layouts against one process with the same
# forwards, exact resume, what is refused.
add_test(NAME integration.float8 COMMAND ${Python3_EXECUTABLE} ${CMAKE_CURRENT_SOURCE_DIR}/tests/integration/test_float8.py
         --titan $<TARGET_FILE:titan>)
set_tests_properties(integration.float8 PROPERTIES ENVIRONMENT "OMP_NUM_THREADS=1" TIMEOUT 600)

# Document masking (block-causal attention): its flavors, every layout against one process, float8,
# exact resume. Up to 4 processes of one thread each.
add_test(NAME integration.documents COMMAND ${Python3_EXECUTABLE} ${CMAKE_CURRENT_SOURCE_DIR}/tests/integration/test_documents.py
         --titan $<TARGET_FILE:titan>)
set_tests_properties(integration.documents PROPERTIES ENVIRONMENT "OMP_NUM_THREADS=1" TIMEOUT 600)

# titan generate against transformers' generate (greedy ids, padded batches), the KV cache
# against rerunning the prefix, seeds, checkpoints of any layout, bad input.
add_test(NAME integration.generate COMMAND ${Python3_EXECUTABLE} ${CMAKE_CURRENT_SOURCE_DIR}/tests/integration/test_generate.py
         --titan $<TARGET_FILE:titan>)
set_tests_properties(integration.generate PROPERTIES SKIP_RETURN_CODE 77 ENVIRONMENT "OMP_NUM_THREADS=1" TIMEOUT 600)

# Hostile inputs and run hygiene (docs/reliability.md): bad values, damaged files, a busy port or
# dump folder, a diverging run. Up to 4 processes of one thread each: run it alone.
add_test(NAME integration.hostile COMMAND ${Python3_EXECUTABLE} ${CMAKE_CURRENT_SOURCE_DIR}/tests/integration/test_hostile.py
         --titan $<TARGET_FILE:titan>)
set_tests_properties(integration.hostile PROPERTIES RUN_SERIAL TRUE TIMEOUT 900)
# Nothing titan.cpp did not write is deleted or overwritten, and no check says "fine" when it is
# not (docs/reliability.md): step folders, conversions, model mismatches, shared checkpoint
# folders, full disks, checkpoint info, HF headers, data positions. One process at a time (two
# for the shared-folder check), one thread each.
add_test(NAME integration.safety COMMAND ${Python3_EXECUTABLE} ${CMAKE_CURRENT_SOURCE_DIR}/tests/integration/test_safety.py
         --titan $<TARGET_FILE:titan>)
set_tests_properties(integration.safety PROPERTIES TIMEOUT 900)
# scripts/gpu_check.sh parses and, without a GPU, fails saying so (skipped where there is one).
add_test(NAME scripts.gpu_check COMMAND bash ${CMAKE_CURRENT_SOURCE_DIR}/tests/scripts/test_gpu_check.sh)
set_tests_properties(scripts.gpu_check PROPERTIES SKIP_RETURN_CODE 77 TIMEOUT 300)

# Every command block of README.md and docs/ runs as written (tests/integration/test_docs.py):
# one process of one thread at a time mostly (a few blocks start up to 4), so beside another test.
add_test(NAME integration.docs COMMAND ${Python3_EXECUTABLE} ${CMAKE_CURRENT_SOURCE_DIR}/tests/integration/test_docs.py)
set_tests_properties(integration.docs PROPERTIES TIMEOUT 900 SKIP_RETURN_CODE 77 ENVIRONMENT "OMP_NUM_THREADS=1")

# Context parallelism: every layout against one process, documents, checkpoints, balance, bytes,
# bad configs. Up to 16 processes of one thread each: run it alone.
add_test(NAME integration.context_parallel COMMAND ${Python3_EXECUTABLE} ${CMAKE_CURRENT_SOURCE_DIR}/tests/integration/test_context_parallel.py
         --titan $<TARGET_FILE:titan>)
set_tests_properties(integration.context_parallel PROPERTIES RUN_SERIAL TRUE TIMEOUT 900)

# Mixture of experts (Qwen3 MoE): layouts against one process, the expert bias, resume, load
# balancing, refusals. Up to four processes of one thread each.
add_test(NAME integration.moe COMMAND ${Python3_EXECUTABLE} ${CMAKE_CURRENT_SOURCE_DIR}/tests/integration/test_moe.py
         --titan $<TARGET_FILE:titan>)
set_tests_properties(integration.moe PROPERTIES TIMEOUT 1800 ENVIRONMENT "OMP_NUM_THREADS=1")

# DeepSeek-V3 (multi-head latent attention, dense and MoE blocks): layouts against one process,
# exact resume, block-causal attention with fused kernels, generation, refusals. Up to two
# processes of one thread each.
add_test(NAME integration.deepseek COMMAND ${Python3_EXECUTABLE} ${CMAKE_CURRENT_SOURCE_DIR}/tests/integration/test_deepseek.py
         --titan $<TARGET_FILE:titan>)
set_tests_properties(integration.deepseek PROPERTIES TIMEOUT 900 ENVIRONMENT "OMP_NUM_THREADS=1")

titan_use_pch(titan_cli titan_tests parity_dump float8_dump moe_dump deepseek_dump bench_train_step bench_kernels
              bench_documents bench_moe distributed_checks hf_checks)
