# MSM_FUZZ=ON: libFuzzer builds (tests/fuzz/, run by `make fuzz`). Every target is compiled
# with coverage instrumentation and ASan/UBSan, so libFuzzer is guided by msm's own code;
# only the fuzz executables link libFuzzer's runtime and main (-fsanitize=fuzzer).
if(NOT MSM_FUZZ)
    return()
endif()
if(NOT CMAKE_C_COMPILER_ID MATCHES "Clang")
    message(FATAL_ERROR
        "MSM_FUZZ=ON needs clang (libFuzzer), but the C compiler is ${CMAKE_C_COMPILER_ID} "
        "(${CMAKE_C_COMPILER}). Configure a fresh build directory with CC=clang, or use `make fuzz`.")
endif()
if(MSM_SANITIZE)
    message(FATAL_ERROR "MSM_FUZZ=ON already builds with address;undefined: leave MSM_SANITIZE empty")
endif()
set(MSM_FUZZ_SANITIZE address,undefined)
# A UB report must stop the run like a crash, or libFuzzer would not save the input.
add_compile_options(-fsanitize=fuzzer-no-link,${MSM_FUZZ_SANITIZE} -fno-omit-frame-pointer
                    -fno-sanitize-recover=all)
add_link_options(-fsanitize=${MSM_FUZZ_SANITIZE})
message(STATUS "msm: libFuzzer build (fuzzer-no-link,${MSM_FUZZ_SANITIZE})")
