# Sourced by the device scripts (gpu-attn.sh, gpu-kern.sh, gpu-flex-compare.sh, gpu-check.sh,
# gpu-aux.sh, gpu-runtime-check.sh, gpu-train.sh, gpu-rt.sh): sets the array GPU_CMAKE_ARGS with
# the configure arguments every GPU-host build uses: Release, libtorch from the system python3's
# PyTorch, CUDA on, and SQLite from the carried .deps/sqlite (the GPU host has no SQLite headers;
# docs/gpu.md). The static library needs libdl/libpthread/libm after it on the link line (on
# glibc >= 2.34 the first two are in libc; naming them is harmless). Without .deps/sqlite the
# system SQLite is used (a note says so).
#
#   source scripts/gpu-cmake-args.sh && cmake -S . -B build-gpu "${GPU_CMAKE_ARGS[@]}"
_gpu_sqlite="$PWD/.deps/sqlite/usr"
GPU_CMAKE_ARGS=(-G Ninja -DCMAKE_BUILD_TYPE=Release
                "-DCMAKE_PREFIX_PATH=$(python3 -c 'import torch; print(torch.utils.cmake_prefix_path)')"
                -DSPARSETUNE_CUDA=ON)
if [[ -f "$_gpu_sqlite/include/sqlite3.h" ]]; then
  GPU_CMAKE_ARGS+=("-DSQLite3_INCLUDE_DIR=$_gpu_sqlite/include"
                   "-DSQLite3_LIBRARY=$_gpu_sqlite/lib/x86_64-linux-gnu/libsqlite3.a"
                   "-DCMAKE_CXX_STANDARD_LIBRARIES=-ldl -lpthread -lm")
else
  echo "note: $_gpu_sqlite/include/sqlite3.h not found; using the system SQLite" >&2
fi
unset _gpu_sqlite
