add_library(pipegate_sanitizers INTERFACE)
if(PIPEGATE_SANITIZE)
  target_compile_options(pipegate_sanitizers INTERFACE
    -fsanitize=${PIPEGATE_SANITIZE} -fno-omit-frame-pointer -fno-sanitize-recover=all)
  target_link_options(pipegate_sanitizers INTERFACE -fsanitize=${PIPEGATE_SANITIZE})
endif()

# Coverage (scripts/coverage.sh): gcov counters in the product code only (linked PRIVATE by the
# core, the glue and the two programs; instrumenting the tests too made their compile half as
# slow again and counts nothing that is reported), updated atomically because the gateway runs
# several worker threads. Everything that links the core links gcov's runtime.
option(PIPEGATE_COVERAGE "Build the product code with gcov coverage counters (--coverage)" OFF)
add_library(pipegate_coverage INTERFACE)
if(PIPEGATE_COVERAGE)
  target_compile_options(pipegate_coverage INTERFACE --coverage -fprofile-update=atomic)
  target_link_options(pipegate_sanitizers INTERFACE --coverage)
endif()
