# Debian packages (deploy/package.sh): install() rules and CPack's DEB generator over the
# build tree deploy/build.sh made, so packaging never compiles anything a second time.
#   kiln-server  kilnd, its hardened systemd unit, /etc/kiln/kilnd.json (conffile), the iPXE
#                templates and example config, maintainer scripts (user kiln, secrets key)
#   kiln         the CLI
#   kiln-agent   the static in-RAM agent and kiln-build-initramfs (deploy/build-initramfs.sh)
# Man pages (docs/man) and changelogs are installed gzipped (-9n, reproducible); binaries are
# stripped by CPack (CPACK_STRIP_FILES); Depends come from dpkg-shlibdeps.
set(KILN_DEB_REVISION 1)
set(KILN_DEB_VERSION ${PROJECT_VERSION}-${KILN_DEB_REVISION})
set(KILN_PKG_DIR ${CMAKE_SOURCE_DIR}/packaging)
set(KILN_PKG_OUT ${CMAKE_BINARY_DIR}/packaging)

# Gzipped documentation, made at build time (a custom target in ALL: gzip is in every Debian).
configure_file(${KILN_PKG_DIR}/changelog.Debian.in ${KILN_PKG_OUT}/changelog.Debian @ONLY)
set(KILN_PKG_GZ)
foreach(src IN ITEMS ${KILN_PKG_OUT}/changelog.Debian ${CMAKE_SOURCE_DIR}/docs/man/kiln.1
                     ${CMAKE_SOURCE_DIR}/docs/man/kilnd.8
                     ${CMAKE_SOURCE_DIR}/docs/man/kiln-build-initramfs.1)
  get_filename_component(name ${src} NAME)
  add_custom_command(OUTPUT ${KILN_PKG_OUT}/${name}.gz
                     COMMAND gzip -9n -c ${src} > ${KILN_PKG_OUT}/${name}.gz
                     DEPENDS ${src} VERBATIM)
  list(APPEND KILN_PKG_GZ ${KILN_PKG_OUT}/${name}.gz)
endforeach()
add_custom_target(kiln_package_docs ALL DEPENDS ${KILN_PKG_GZ})

set(KILN_DOC usr/share/doc)
set(KILN_BASHCOMP usr/share/bash-completion/completions)

# --- kiln-server ------------------------------------------------------------------------------
install(TARGETS kilnd RUNTIME DESTINATION usr/sbin COMPONENT server)
install(FILES ${CMAKE_SOURCE_DIR}/deploy/kilnd.service DESTINATION lib/systemd/system COMPONENT server)
install(FILES ${KILN_PKG_DIR}/server/kilnd.json DESTINATION etc/kiln COMPONENT server)
install(FILES ${KILN_PKG_OUT}/kilnd.8.gz DESTINATION usr/share/man/man8 COMPONENT server)
install(FILES ${CMAKE_SOURCE_DIR}/deploy/completion/kilnd DESTINATION ${KILN_BASHCOMP}
        COMPONENT server)
install(FILES ${CMAKE_SOURCE_DIR}/deploy/kilnd.example.json DESTINATION usr/share/kiln
        COMPONENT server)
# The templates are built into kilnd; these copies are what boot.scripts_dir overrides start from.
install(DIRECTORY ${CMAKE_SOURCE_DIR}/ipxe-scripts/ DESTINATION usr/share/kiln/ipxe-scripts
        COMPONENT server FILES_MATCHING PATTERN "*.ipxe")
# Dashboards and alert rules, when the tree has them (other parts of issue 19).
foreach(dir grafana prometheus)
  if(EXISTS ${CMAKE_SOURCE_DIR}/deploy/${dir})
    install(DIRECTORY ${CMAKE_SOURCE_DIR}/deploy/${dir} DESTINATION usr/share/kiln
            COMPONENT server)
  endif()
endforeach()

# --- kiln (CLI) -------------------------------------------------------------------------------
if(TARGET kiln)
  install(TARGETS kiln RUNTIME DESTINATION usr/bin COMPONENT cli)
endif()
install(FILES ${KILN_PKG_OUT}/kiln.1.gz DESTINATION usr/share/man/man1 COMPONENT cli)
install(FILES ${CMAKE_SOURCE_DIR}/deploy/completion/kiln DESTINATION ${KILN_BASHCOMP}
        COMPONENT cli)

# --- kiln-agent -------------------------------------------------------------------------------
# build-initramfs.sh finds its helpers relative to itself (../deploy/lab, ../deploy/initramfs):
# the same tree under /usr/share/kiln/agent; the wrapper points it at the installed agent.
install(TARGETS kiln-agent RUNTIME DESTINATION usr/lib/kiln COMPONENT agent)
install(PROGRAMS ${CMAKE_SOURCE_DIR}/deploy/build-initramfs.sh
        DESTINATION usr/share/kiln/agent/deploy COMPONENT agent)
install(FILES ${CMAKE_SOURCE_DIR}/deploy/lab/kernel.sh DESTINATION usr/share/kiln/agent/deploy/lab
        COMPONENT agent)
install(PROGRAMS ${CMAKE_SOURCE_DIR}/deploy/initramfs/init
                 ${CMAKE_SOURCE_DIR}/deploy/initramfs/udhcpc.script
        DESTINATION usr/share/kiln/agent/deploy/initramfs COMPONENT agent)
install(PROGRAMS ${KILN_PKG_DIR}/agent/kiln-build-initramfs DESTINATION usr/bin COMPONENT agent)
install(FILES ${KILN_PKG_OUT}/kiln-build-initramfs.1.gz DESTINATION usr/share/man/man1
        COMPONENT agent)
install(FILES ${KILN_PKG_DIR}/agent/lintian-overrides DESTINATION usr/share/lintian/overrides
        RENAME kiln-agent COMPONENT agent)

# copyright and changelog in every package's doc directory.
foreach(comp_pkg IN ITEMS server:kiln-server cli:kiln agent:kiln-agent)
  string(REPLACE ":" ";" cp ${comp_pkg})
  list(GET cp 0 comp)
  list(GET cp 1 pkg)
  install(FILES ${KILN_PKG_DIR}/copyright DESTINATION ${KILN_DOC}/${pkg} COMPONENT ${comp})
  install(FILES ${KILN_PKG_OUT}/changelog.Debian.gz DESTINATION ${KILN_DOC}/${pkg}
          COMPONENT ${comp})
endforeach()

# --- CPack ------------------------------------------------------------------------------------
set(CPACK_GENERATOR DEB)
set(CPACK_PACKAGING_INSTALL_PREFIX /)
set(CPACK_SET_DESTDIR OFF)
set(CPACK_STRIP_FILES ON)
set(CPACK_PACKAGE_VERSION ${PROJECT_VERSION})
set(CPACK_PACKAGE_CONTACT "kiln developers <kiln@lists.example.org>")
set(CPACK_PACKAGE_VENDOR "kiln")
set(CPACK_PACKAGE_DIRECTORY ${CMAKE_BINARY_DIR}/deb)
set(CPACK_COMPONENTS_ALL server cli agent)
set(CPACK_DEB_COMPONENT_INSTALL ON)
set(CPACK_DEBIAN_FILE_NAME DEB-DEFAULT)
set(CPACK_DEBIAN_PACKAGE_RELEASE ${KILN_DEB_REVISION})
set(CPACK_DEBIAN_PACKAGE_SHLIBDEPS ON)
set(CPACK_DEBIAN_PACKAGE_SECTION admin)
set(CPACK_DEBIAN_PACKAGE_PRIORITY optional)
set(CPACK_DEBIAN_PACKAGE_HOMEPAGE "https://kiln.example.org/")
set(CPACK_DEBIAN_PACKAGE_CONTROL_STRICT_PERMISSION ON)
set(CPACK_DEBIAN_COMPRESSION_TYPE xz)

set(CPACK_DEBIAN_SERVER_PACKAGE_NAME kiln-server)
set(CPACK_DEBIAN_SERVER_PACKAGE_DEPENDS "adduser")
set(CPACK_DEBIAN_SERVER_PACKAGE_RECOMMENDS "ipxe, ipmitool")
set(CPACK_DEBIAN_SERVER_PACKAGE_SUGGESTS "kiln, kiln-agent")
set(CPACK_COMPONENT_SERVER_DESCRIPTION
    "bare-metal image provisioning daemon (kilnd)\n\
kilnd provisions bare-metal machines with immutable disk images: DHCPv4\n\
(authoritative or proxy), TFTP and HTTP network boot, a REST API and an\n\
embedded SQLite database. It runs as the systemd service kilnd.service\n\
under its own user, kiln; the packaged configuration\n\
(/etc/kiln/kilnd.json) serves only the API on loopback until DHCP is\n\
configured.")
set(CPACK_DEBIAN_SERVER_PACKAGE_CONTROL_EXTRA
    ${KILN_PKG_DIR}/server/conffiles ${KILN_PKG_DIR}/server/postinst
    ${KILN_PKG_DIR}/server/prerm ${KILN_PKG_DIR}/server/postrm)

set(CPACK_DEBIAN_CLI_PACKAGE_NAME kiln)
set(CPACK_COMPONENT_CLI_DESCRIPTION
    "command-line client for the kiln provisioning server\n\
kiln drives kilnd's REST API (machines, image versions, assignments,\n\
rollouts, tokens) and builds, signs, inspects and pushes packed .kiln\n\
disk images.")

set(CPACK_DEBIAN_AGENT_PACKAGE_NAME kiln-agent)
# (apt-get and dpkg-deb fetch and unpack the kernel package: both are in every Debian system.)
set(CPACK_DEBIAN_AGENT_PACKAGE_DEPENDS "busybox-static, cpio, binutils")
set(CPACK_COMPONENT_AGENT_DESCRIPTION
    "in-RAM imaging agent of the kiln provisioning system\n\
kiln-agent runs from an initramfs on the machine being imaged: it\n\
streams a kiln image to the disks, verifying every chunk before it is\n\
written. kiln-build-initramfs builds the agent's kernel and initramfs\n\
from Debian's kernel package and busybox-static.")

include(CPack)
