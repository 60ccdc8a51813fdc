add_library(pipegate_warnings INTERFACE)
target_compile_options(pipegate_warnings INTERFACE
  -Wall -Wextra -Wpedantic -Wshadow -Wnon-virtual-dtor -Woverloaded-virtual
  -Wimplicit-fallthrough -Wformat=2
  $<$<BOOL:${PIPEGATE_WERROR}>:-Werror>)

# Hardening, as Debian's dpkg-buildflags gives its packages: fortified libc calls (they need the
# optimiser, so not in Debug builds), a stack protector, and a read-only GOT bound at start
# (full RELRO). Not with sanitizers, which intercept the same calls.
if(PIPEGATE_SANITIZE STREQUAL "")
  target_compile_options(pipegate_warnings INTERFACE
    $<$<NOT:$<CONFIG:Debug>>:-D_FORTIFY_SOURCE=2> -fstack-protector-strong)
  target_link_options(pipegate_warnings INTERFACE -Wl,-z,relro -Wl,-z,now)
endif()
