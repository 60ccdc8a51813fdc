# Packaging: the files that belong to the system rather than to the prefix (the example
# configurations in /etc, the systemd units), and the packages `cpack` makes (TGZ and DEB).
#
# cpack installs the build again under its own prefix (/usr for the .deb), so where /etc and
# the unit directory are is decided when installing, not when configuring: GNUInstallDirs'
# rule for CMAKE_INSTALL_FULL_SYSCONFDIR applied to the prefix of that install. Prefix / or
# /usr: /etc and /lib/systemd/system; /opt/NAME: /etc/opt/NAME; any other prefix P: P/etc and
# P/lib/systemd/system. An absolute CMAKE_INSTALL_SYSCONFDIR or PIPEGATE_SYSTEMD_UNITDIR is
# used as it is. The units name /usr/sbin/pipegated and /usr/bin/pipegate, where the .deb puts
# them.

set(PIPEGATE_SYSTEMD_UNITDIR "lib/systemd/system" CACHE STRING
    "Where systemd units go: relative to the install prefix (/lib/systemd/system for /usr), or absolute")

install(CODE "
  set(pipegate_source_dir [==[${PROJECT_SOURCE_DIR}]==])
  set(pipegate_sysconfdir [==[${CMAKE_INSTALL_SYSCONFDIR}]==])
  set(pipegate_unitdir [==[${PIPEGATE_SYSTEMD_UNITDIR}]==])
")
install(CODE [==[
  string(REGEX REPLACE "/+$" "" pipegate_prefix "${CMAKE_INSTALL_PREFIX}")
  foreach(kind sysconfdir unitdir)
    set(dir "${pipegate_${kind}}")
    if(IS_ABSOLUTE "${dir}")
      set(pipegate_${kind}_full "${dir}")
    elseif(pipegate_prefix STREQUAL "" OR pipegate_prefix STREQUAL "/usr")
      set(pipegate_${kind}_full "/${dir}")
    elseif(kind STREQUAL "sysconfdir" AND pipegate_prefix MATCHES "^/opt/")
      set(pipegate_${kind}_full "/${dir}${pipegate_prefix}")
    else()
      set(pipegate_${kind}_full "${pipegate_prefix}/${dir}")
    endif()
  endforeach()
  file(INSTALL DESTINATION "${pipegate_sysconfdir_full}/pipegate" TYPE FILE FILES
       "${pipegate_source_dir}/deploy/pipegated.toml.example"
       "${pipegate_source_dir}/deploy/systemd/mount-example.conf")
  # The home of pipegate-mount@NAME.service's NAME.conf files.
  file(MAKE_DIRECTORY "$ENV{DESTDIR}${pipegate_sysconfdir_full}/pipegate/mount")
  file(INSTALL DESTINATION "${pipegate_unitdir_full}" TYPE FILE FILES
       "${pipegate_source_dir}/deploy/systemd/pipegated.service"
       "${pipegate_source_dir}/deploy/systemd/pipegate-mount@.service")
]==])

set(CPACK_PACKAGE_NAME pipegate)
set(CPACK_PACKAGE_VENDOR "pipegate")
set(CPACK_PACKAGE_DESCRIPTION_SUMMARY "Remote pipe gateway: FIFOs and Unix sockets over mutual TLS")
# The .deb's extended description: lines of at most 80 characters, as Debian wants them.
string(JOIN "\n" CPACK_PACKAGE_DESCRIPTION
  "pipegated, the gateway, exports local named pipes (FIFOs) and Unix sockets by"
  "name over TCP with mutual TLS 1.3, each with its own list of client identities."
  "pipegate, the bridge client, reads, writes or talks to them from another host,"
  "or mounts one as a local FIFO or Unix socket that unmodified programs open."
  "Includes systemd units for the gateway and for mounts, man pages, bash"
  "completion and pipegate-certs, a development PKI script.")
set(CPACK_PACKAGE_CONTACT "pipegate maintainers <pipegate@localhost>")
set(CPACK_GENERATOR "TGZ;DEB")
# Binaries without their debugging sections, as Debian ships them.
set(CPACK_STRIP_FILES ON)

set(CPACK_DEBIAN_FILE_NAME DEB-DEFAULT)
set(CPACK_DEBIAN_PACKAGE_SECTION net)
set(CPACK_DEBIAN_PACKAGE_PRIORITY optional)
# Libraries from dpkg-shlibdeps; postinst's useradd and groupadd from passwd.
set(CPACK_DEBIAN_PACKAGE_SHLIBDEPS ON)
set(CPACK_DEBIAN_PACKAGE_DEPENDS "passwd")
# pipegate-certs runs the openssl command.
set(CPACK_DEBIAN_PACKAGE_RECOMMENDS "openssl")
set(CPACK_DEBIAN_PACKAGE_SUGGESTS "bash-completion")
# The examples in /etc are conffiles: an upgrade keeps local edits, a purge removes them.
set(PIPEGATE_DEB_CONFFILES ${PROJECT_BINARY_DIR}/debian/conffiles)
file(WRITE ${PIPEGATE_DEB_CONFFILES}
     "/etc/pipegate/pipegated.toml.example\n/etc/pipegate/mount-example.conf\n")
set(CPACK_DEBIAN_PACKAGE_CONTROL_EXTRA
    ${PROJECT_SOURCE_DIR}/deploy/debian/postinst
    ${PROJECT_SOURCE_DIR}/deploy/debian/prerm
    ${PROJECT_SOURCE_DIR}/deploy/debian/postrm
    ${PIPEGATE_DEB_CONFFILES})
# Maintainer scripts 0755 and conffiles 0644 in the control archive, whatever the checkout's modes.
set(CPACK_DEBIAN_PACKAGE_CONTROL_STRICT_PERMISSION ON)

include(CPack)
