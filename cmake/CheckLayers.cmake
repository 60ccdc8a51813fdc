# The layering rules of docs/architecture.md, checked on the source tree:
#   - the core (include/, src/ outside src/uv/) includes neither uv.h nor src/uv/ headers;
#   - the programs (gateway/, bridge-client/) use libuv only through the src/uv/ wrappers: they
#     never include uv.h nor name a libuv identifier (uv_*).
# Included by CMakeLists.txt, which calls pipegate_check_layers() at configure time (a violation
# fails the configure), and runnable as a script, which the test suite does on a tree with
# planted violations to show that each rule fires:
#   cmake -DPIPEGATE_LAYERS_ROOT=DIR -P cmake/CheckLayers.cmake

function(pipegate_check_layers root)
  set(violations "")
  file(GLOB_RECURSE core_files ${root}/include/*.h ${root}/src/*.h ${root}/src/*.cc)
  foreach(file IN LISTS core_files)
    if(file MATCHES "/src/uv/")
      continue()
    endif()
    file(STRINGS ${file} hits REGEX "^[ \t]*#[ \t]*include[ \t]*[<\"](uv\\.h|uv/)")
    if(hits)
      string(APPEND violations "\n  ${file}: the core includes libuv or src/uv (${hits}); "
                               "move the code to src/uv/ or to a program")
    endif()
  endforeach()
  file(GLOB_RECURSE program_files ${root}/gateway/*.h ${root}/gateway/*.cc
       ${root}/bridge-client/*.h ${root}/bridge-client/*.cc)
  foreach(file IN LISTS program_files)
    file(STRINGS ${file} hits REGEX "(#[ \t]*include[ \t]*<uv\\.h>|(^|[^A-Za-z0-9_])uv_[a-z])")
    if(hits)
      list(GET hits 0 first)
      string(STRIP "${first}" first)
      string(APPEND violations "\n  ${file}: a program uses libuv directly (\"${first}\"); "
                               "use the wrappers in src/uv/ (handles.h)")
    endif()
  endforeach()
  if(violations)
    message(FATAL_ERROR "layering violations:${violations}")
  endif()
endfunction()

if(CMAKE_SCRIPT_MODE_FILE AND DEFINED PIPEGATE_LAYERS_ROOT)
  pipegate_check_layers(${PIPEGATE_LAYERS_ROOT})
endif()
