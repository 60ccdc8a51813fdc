add_library(pipegate_warnings INTERFACE)
target_compile_options(pipegate_warnings INTERFACE
  -Wall -Wextra -Wpedantic -Wshadow -Wnon-virtual-dtor -Woverloaded-virtual
  -Wimplicit-fallthrough -Wformat=2
  $<$<BOOL:${PIPEGATE_WERROR}>:-Werror>)
