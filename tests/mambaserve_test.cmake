# mambaserve_test(NAME SOURCES... [LIBS ...]) — one GoogleTest executable registered with CTest.
function(mambaserve_test name)
  cmake_parse_arguments(ARG "" "" "SOURCES;LIBS;LABELS" ${ARGN})
  add_executable(${name} ${ARG_SOURCES})
  target_link_libraries(${name} PRIVATE ${ARG_LIBS} GTest::gtest GTest::gtest_main GTest::gmock)
  target_compile_definitions(${name} PRIVATE
    MAMBASERVE_SOURCE_DIR="${PROJECT_SOURCE_DIR}"
    MAMBASERVE_BINARY_DIR="${PROJECT_BINARY_DIR}")
  gtest_discover_tests(${name} DISCOVERY_TIMEOUT 60 PROPERTIES LABELS "${ARG_LABELS}")
endfunction()

# mambaserve_fuzz_target(NAME SOURCES... [LIBS ...] [OWN_DRIVER [DRIVER_ARGS ...]] LABEL L) — a fuzz target
# (LLVMFuzzerTestOneInput) with a seed corpus in tests/fuzz/corpus/NAME. With MAMBASERVE_LIBFUZZER
# (the `fuzz` preset, scripts/fuzz.sh) it is a libFuzzer binary. Otherwise it is a CTest test: an
# OWN_DRIVER target has its own deterministic main() (compiled out for libFuzzer), run with
# DRIVER_ARGS; the others get tests/fuzz/fuzz_replay_main.cc, which replays the seed corpus and mutations.
function(mambaserve_fuzz_target name)
  cmake_parse_arguments(FUZZ "OWN_DRIVER" "LABEL" "SOURCES;LIBS;DRIVER_ARGS" ${ARGN})
  add_executable(${name} ${FUZZ_SOURCES})
  target_link_libraries(${name} PRIVATE ${FUZZ_LIBS})
  target_include_directories(${name} PRIVATE ${PROJECT_SOURCE_DIR})
  if(MAMBASERVE_LIBFUZZER)
    target_compile_definitions(${name} PRIVATE MAMBASERVE_LIBFUZZER)
    target_link_options(${name} PRIVATE -fsanitize=fuzzer)
    return()
  endif()
  if(FUZZ_OWN_DRIVER)
    add_test(NAME ${name} COMMAND ${name} ${FUZZ_DRIVER_ARGS})
  else()
    target_sources(${name} PRIVATE ${PROJECT_SOURCE_DIR}/tests/fuzz/fuzz_replay_main.cc)
    add_test(NAME ${name} COMMAND ${name} ${PROJECT_SOURCE_DIR}/tests/fuzz/corpus/${name} 20000)
  endif()
  set_tests_properties(${name} PROPERTIES LABELS ${FUZZ_LABEL} TIMEOUT 120)
endfunction()
