# Every dependency comes from a Debian 12 package; nothing is downloaded at build time.
find_package(OpenSSL 3.0 REQUIRED)
find_package(fmt REQUIRED)
find_package(CLI11 REQUIRED)
find_package(PkgConfig REQUIRED)
find_package(Threads REQUIRED)
# JSON log lines (src/log.cc).
find_package(nlohmann_json 3 REQUIRED)
# sd_notify readiness for systemd's Type=notify (gateway/).
pkg_check_modules(LIBSYSTEMD REQUIRED IMPORTED_TARGET libsystemd)

find_package(libuv CONFIG QUIET)
if(TARGET libuv::uv)
  add_library(pipegate::libuv ALIAS libuv::uv)
else()
  pkg_check_modules(LIBUV REQUIRED IMPORTED_TARGET libuv)
  add_library(pipegate::libuv ALIAS PkgConfig::LIBUV)
endif()

# toml++ is used header-only (TOML_HEADER_ONLY=1, set in src/config.cc), so only its headers
# are needed.
find_path(TOMLPLUSPLUS_INCLUDE_DIR toml++/toml.h REQUIRED)
