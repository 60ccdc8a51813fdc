add_library(pipegate_sanitizers INTERFACE)
if(PIPEGATE_SANITIZE)
  target_compile_options(pipegate_sanitizers INTERFACE
    -fsanitize=${PIPEGATE_SANITIZE} -fno-omit-frame-pointer -fno-sanitize-recover=all)
  target_link_options(pipegate_sanitizers INTERFACE -fsanitize=${PIPEGATE_SANITIZE})
endif()
