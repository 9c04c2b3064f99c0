# Imports libtorch from the pip `torch` package as the target `torch_libs`.
# We link the shared libraries directly instead of using TorchConfig.cmake: it is faster, and it
# does not require a CUDA toolkit when the wheel is a CUDA build.
if(NOT TORCH_DIR)
  execute_process(
    COMMAND ${Python3_EXECUTABLE} -c "import os, torch; print(os.path.dirname(torch.__file__))"
    OUTPUT_VARIABLE TORCH_DIR OUTPUT_STRIP_TRAILING_WHITESPACE
    RESULT_VARIABLE _torch_rc ERROR_QUIET)
  if(NOT _torch_rc EQUAL 0 OR NOT TORCH_DIR)
    message(FATAL_ERROR "Python torch not found for ${Python3_EXECUTABLE}. Install it "
                        "(pip install torch) or pass -DTORCH_DIR=<site-packages>/torch.")
  endif()
endif()
execute_process(
  COMMAND ${Python3_EXECUTABLE} -c "import torch; print(torch.__version__); print(int(torch._C._GLIBCXX_USE_CXX11_ABI))"
  OUTPUT_VARIABLE _torch_info OUTPUT_STRIP_TRAILING_WHITESPACE ERROR_QUIET)
string(REPLACE "\n" ";" _torch_info "${_torch_info}")
list(GET _torch_info 0 TORCH_VERSION)
list(GET _torch_info 1 TORCH_CXX11_ABI)
message(STATUS "torch ${TORCH_VERSION} at ${TORCH_DIR} (cxx11 abi ${TORCH_CXX11_ABI})")

add_library(torch_libs INTERFACE)
target_include_directories(torch_libs SYSTEM INTERFACE
  ${TORCH_DIR}/include ${TORCH_DIR}/include/torch/csrc/api/include)
target_compile_definitions(torch_libs INTERFACE _GLIBCXX_USE_CXX11_ABI=${TORCH_CXX11_ABI})
set(_torch_libdir ${TORCH_DIR}/lib)
# libstdc++ comes first among the shared libraries: libtorch.so and libtorch_cpu.so export
# their own static copies of std::filesystem, and the first definition in the search order wins
# for every caller. Theirs crashed in remove_all; the system's is the one our code is built for.
# libtorch.so pulls in libtorch_cuda.so where it exists, which registers the CUDA kernels;
# --no-as-needed keeps both even though we call nothing in libtorch.so directly.
target_link_libraries(torch_libs INTERFACE
  "-Wl,--no-as-needed" stdc++ ${_torch_libdir}/libtorch.so "-Wl,--as-needed"
  ${_torch_libdir}/libtorch_cpu.so ${_torch_libdir}/libc10.so)
target_link_options(torch_libs INTERFACE "-Wl,-rpath,${_torch_libdir}")

set(TITAN_HAVE_CUDA OFF)
if(TITAN_CUDA AND EXISTS ${_torch_libdir}/libtorch_cuda.so)
  find_package(CUDAToolkit QUIET)
  if(CUDAToolkit_FOUND)
    set(TITAN_HAVE_CUDA ON)
    target_include_directories(torch_libs SYSTEM INTERFACE ${CUDAToolkit_INCLUDE_DIRS})
    target_link_libraries(torch_libs INTERFACE
      "-Wl,--no-as-needed" ${_torch_libdir}/libtorch_cuda.so ${_torch_libdir}/libc10_cuda.so
      "-Wl,--as-needed")
    target_compile_definitions(torch_libs INTERFACE TITAN_HAVE_CUDA=1)
    # nccl.h for c10d's ProcessGroupNCCL: the wheel's own NCCL package first, else the toolkit's.
    file(GLOB _nccl_inc "${TORCH_DIR}/../nvidia/nccl/include")
    if(_nccl_inc)
      target_include_directories(torch_libs SYSTEM INTERFACE ${_nccl_inc})
    endif()
  endif()
endif()
message(STATUS "titan CUDA code: ${TITAN_HAVE_CUDA}")
