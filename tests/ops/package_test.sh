#!/usr/bin/env bash
# package_test: the Debian package, end to end, on this machine.
#
#   package_test.sh BUILD_DIR [CPACK]
#
# Makes the .deb with `cpack -G DEB` from BUILD_DIR (into a temporary directory), checks its
# contents and control data, installs it with dpkg, checks what the installed files do (the
# account postinst made, pipegate-certs and pipegated --check-config on the installed example,
# the man pages, the bash completion, systemd-analyze verify on both units), purges it, and
# checks that nothing is left. It needs root (dpkg, useradd); otherwise it prints
# `package_test  SKIP (...)` and exits 77. It refuses to run where a pipegate package, a
# pipegate account or /etc/pipegate already exists, because it installs and purges its own and
# checks that the purge leaves none of them. Whatever happens, the exit trap purges what it
# installed and removes what it made.
#
# Prints the .deb's size and file count. Every external command is bounded by `timeout`.
set -uo pipefail

NAME=package_test
BUILD_DIR=${1:-}
CPACK=${2:-cpack}

UNITDIR=/lib/systemd/system
ETC=/etc/pipegate
COMPLETION=/usr/share/bash-completion/completions/pipegate

fail() {
  echo "$NAME: FAIL: $*" >&2
  exit 1
}
note() { echo "$NAME: $*"; }

if [[ $EUID -ne 0 ]]; then
  echo "$NAME  SKIP (needs root: it installs and purges the package with dpkg)"
  exit 77
fi
[[ -n $BUILD_DIR && -f $BUILD_DIR/CPackConfig.cmake ]] ||
  fail "usage: $0 BUILD_DIR [CPACK] (BUILD_DIR must hold CPackConfig.cmake)"
for tool in "$CPACK" dpkg dpkg-deb dpkg-query man systemd-analyze setpriv timeout getent; do
  command -v "$tool" >/dev/null || fail "'$tool' is missing (scripts/deps.sh installs it)"
done

# ---- Refuse to touch what is not ours ----
status=$(dpkg-query -W -f='${db:Status-Status}' pipegate 2>/dev/null || true)
if [[ -n $status && $status != not-installed ]]; then
  fail "a pipegate package is already on this machine (dpkg status '$status'); this test" \
    "installs and purges its own, so remove it first: dpkg --purge pipegate"
fi
getent passwd pipegate >/dev/null && fail "a user 'pipegate' already exists; the test checks" \
  "that the package makes it and that a purge removes it (userdel pipegate first)"
getent group pipegate >/dev/null && fail "a group 'pipegate' already exists; the test checks" \
  "that the package makes it and that a purge removes it (groupdel pipegate first)"
[[ -e $ETC ]] && fail "$ETC already exists; the test checks that a purge leaves none (move it away)"

TMP=$(mktemp -d /tmp/pipegate-package.XXXXXX) || fail "mktemp failed"
installed=0  # The package is installed (by this test).
ours=0       # The test has installed the package: a pipegate account or $ETC is then its own.
generated=() # Files this test made in $ETC.

# shellcheck disable=SC2317  # Called by the EXIT trap.
cleanup() {
  local rc=$?
  for f in "${generated[@]}"; do rm -f "$f"; done
  if ((installed)); then
    timeout 120 dpkg --purge pipegate >"$TMP/cleanup-purge.log" 2>&1 ||
      echo "$NAME: cleanup: dpkg --purge pipegate failed: $(tail -3 "$TMP/cleanup-purge.log")" >&2
  fi
  # A purge that failed the checks may have left these; they did not exist before the test.
  if ((ours)); then
    getent passwd pipegate >/dev/null && userdel pipegate 2>/dev/null
    getent group pipegate >/dev/null && groupdel pipegate 2>/dev/null
    rm -rf "$ETC"
  fi
  rm -rf "$TMP"
  exit "$rc"
}
trap cleanup EXIT
trap 'exit 130' INT
trap 'exit 143' TERM

# ---- Build the .deb ----
note "cpack -G DEB in $BUILD_DIR"
(cd "$BUILD_DIR" && timeout 900 "$CPACK" -G DEB -B "$TMP/out") >"$TMP/cpack.log" 2>&1 ||
  fail "cpack -G DEB failed:$(echo; tail -20 "$TMP/cpack.log")"
shopt -s nullglob
debs=("$TMP"/out/*.deb)
shopt -u nullglob
((${#debs[@]} == 1)) || fail "cpack made ${#debs[@]} .deb files, not 1: ${debs[*]}"
DEB=${debs[0]}

# ---- What the .deb holds ----
timeout 60 dpkg-deb -c "$DEB" >"$TMP/contents" || fail "dpkg-deb -c $DEB failed"
# Paths as dpkg sees them: "./usr/bin/x" -> "/usr/bin/x", directories without the slash.
awk '{ p = $6; sub(/^\./, "", p); sub(/\/$/, "", p); if (p != "") print p }' "$TMP/contents" \
  | sort >"$TMP/paths"
expected=(
  /usr/sbin/pipegated
  /usr/bin/pipegate
  /usr/bin/pipegate-certs
  "$UNITDIR/pipegated.service"
  "$UNITDIR/pipegate-mount@.service"
  "$ETC/pipegated.toml.example"
  "$ETC/mount-example.conf"
  "$ETC/mount"
  /usr/share/man/man1/pipegate.1.gz
  /usr/share/man/man5/pipegated.toml.5.gz
  /usr/share/man/man8/pipegated.8.gz
  "$COMPLETION"
  /usr/share/bash-completion/completions/pipegated
  /usr/share/doc/pipegate/README.md
  /usr/share/doc/pipegate/security.md
)
for p in "${expected[@]}"; do
  grep -qxF -- "$p" "$TMP/paths" || fail "the .deb lacks $p; dpkg-deb -c lists:$(echo; cat "$TMP/paths")"
done
# GNUInstallDirs under the packaging prefix /usr must not have made /usr/etc or /usr/lib/systemd.
if grep -E '^/usr/(etc|local)(/|$)|^/usr/lib/systemd(/|$)' "$TMP/paths"; then
  fail "the .deb puts files under /usr/etc, /usr/local or /usr/lib/systemd (listed above)"
fi
if grep -Ei '\.(key|pem|crt|crl)$' "$TMP/paths"; then
  fail "the .deb ships key or certificate files (listed above); keys are never installed"
fi
for exe in ./usr/sbin/pipegated ./usr/bin/pipegate ./usr/bin/pipegate-certs; do
  grep -qE "^-rwxr-xr-x root/root .* $exe\$" "$TMP/contents" ||
    fail "$exe is not a root-owned 0755 file in the .deb: $(grep " $exe\$" "$TMP/contents")"
done
depends=$(timeout 60 dpkg-deb -f "$DEB" Depends)
for lib in libc6 libssl3 libuv1 passwd; do
  [[ $depends == *"$lib"* ]] || fail "Depends lacks $lib (dpkg-shlibdeps not run?): $depends"
done
timeout 60 dpkg-deb -e "$DEB" "$TMP/control" || fail "dpkg-deb -e failed"
for script in postinst prerm postrm; do
  [[ -x $TMP/control/$script ]] || fail "the .deb has no executable $script"
done
diff <(sort "$TMP/control/conffiles") \
  <(printf '%s\n' "$ETC/mount-example.conf" "$ETC/pipegated.toml.example") >/dev/null ||
  fail "conffiles should list the two examples in $ETC: $(cat "$TMP/control/conffiles")"
deb_bytes=$(stat -c %s "$DEB")
deb_files=$(grep -c '^-' "$TMP/contents")
deb_entries=$(wc -l <"$TMP/paths")
note "$(basename "$DEB"): $deb_bytes bytes, $deb_files files ($deb_entries entries with directories)"

# Directories of the package that exist before the install (or symlinks to directories, as /lib
# is on a merged-/usr system): a purge must not remove them.
: >"$TMP/dirs-before"
while read -r p; do
  [[ -d $p ]] && echo "$p" >>"$TMP/dirs-before"
done <"$TMP/paths"

# ---- Install ----
installed=1
ours=1
timeout 300 dpkg -i "$DEB" >"$TMP/install.log" 2>&1 || fail "dpkg -i failed:$(echo; cat "$TMP/install.log")"
[[ $(dpkg-query -W -f='${db:Status-Status}' pipegate) == installed ]] ||
  fail "dpkg does not report pipegate as installed after dpkg -i"
timeout 60 dpkg -L pipegate | sort >"$TMP/installed-list" || fail "dpkg -L pipegate failed"
for p in "${expected[@]}"; do
  [[ -e $p ]] || fail "$p is in the package but not on disk after dpkg -i (a dpkg path-exclude?)"
done
[[ -d $ETC/mount ]] || fail "$ETC/mount (where mount instances are configured) was not made"

# ---- The account postinst made ----
IFS=: read -r _ _ uid gid _ home shell < <(getent passwd pipegate) ||
  fail "postinst did not create the user 'pipegate'"
IFS=: read -r _ _ group_gid _ < <(getent group pipegate) ||
  fail "postinst did not create the group 'pipegate'"
[[ $gid == "$group_gid" ]] || fail "the user pipegate's group is $gid, not the group pipegate ($group_gid)"
((uid < 1000)) || fail "the user pipegate has uid $uid, not a system uid"
[[ $shell == */nologin && $home == /nonexistent ]] ||
  fail "the user pipegate should have no login and no home, has shell $shell and home $home"
[[ ! -e /nonexistent ]] || fail "/nonexistent exists: something made the account's home"
note "postinst made user pipegate ($uid) in group pipegate ($gid)"

# ---- pipegated --check-config on the installed example, verbatim ----
# The example names $ETC/gateway.crt, gateway.key and ca.crt, which is exactly what the
# installed pipegate-certs writes with --dir $ETC: so the shipped file is checked as shipped.
# These files are the test's, removed again before the purge, so that the purge check sees
# only what the package and its scripts left.
PIPEGATED=/usr/sbin/pipegated
EXAMPLE=$ETC/pipegated.toml.example
if timeout 30 "$PIPEGATED" --check-config "$EXAMPLE" >"$TMP/check-nocerts.out" 2>&1; then
  fail "--check-config accepted the example before its certificates existed:" \
    "$(cat "$TMP/check-nocerts.out")"
fi
grep -q "gateway.crt" "$TMP/check-nocerts.out" ||
  fail "--check-config without certificates should name gateway.crt: $(cat "$TMP/check-nocerts.out")"
generated=("$ETC/ca.crt" "$ETC/ca.key" "$ETC/gateway.crt" "$ETC/gateway.key")
{ timeout 60 /usr/bin/pipegate-certs ca --dir "$ETC" &&
  timeout 60 /usr/bin/pipegate-certs gateway --dir "$ETC"; } >"$TMP/certs.log" 2>&1 ||
  fail "the installed pipegate-certs failed: $(cat "$TMP/certs.log")"
for f in "${generated[@]}"; do [[ -s $f ]] || fail "pipegate-certs did not write $f"; done
timeout 30 "$PIPEGATED" --check-config "$EXAMPLE" >"$TMP/check.out" 2>&1 ||
  fail "pipegated --check-config $EXAMPLE failed with certificates in place:$(echo; cat "$TMP/check.out")"
grep -qE "^$EXAMPLE: OK \([1-9][0-9]* export\(s\)\)$" "$TMP/check.out" ||
  fail "--check-config did not say OK with the exports: $(cat "$TMP/check.out")"
note "check-config: $(cat "$TMP/check.out")"
# As the unit runs it: the service user reads the key through its group once the unit's
# documented chgrp/chmod is done, and not before.
as_service() {
  timeout 30 setpriv --reuid=pipegate --regid=pipegate --init-groups "$@"
}
if as_service "$PIPEGATED" --check-config "$EXAMPLE" >"$TMP/check-user.out" 2>&1; then
  fail "the pipegate user could use gateway.key (0600 root) before the chgrp: $(cat "$TMP/check-user.out")"
fi
{ chgrp pipegate "$ETC/gateway.key" && chmod 0640 "$ETC/gateway.key"; } || fail "chgrp/chmod of the key failed"
as_service "$PIPEGATED" --check-config "$EXAMPLE" >"$TMP/check-user.out" 2>&1 ||
  fail "as the pipegate user, --check-config failed after chgrp pipegate gateway.key:" \
    "$(cat "$TMP/check-user.out")"

# ---- Man pages ----
# A deliberately broken page first: it proves that this man prints troff's warnings on stderr
# (so an empty stderr below means something).
printf '.TH BROKEN 1\n.SH NAME\nbroken \\- a page with an unknown macro\n.nosuchmacro\n' >"$TMP/broken.1"
MAN_KEEP_STDERR=1 MANWIDTH=80 timeout 30 man --warnings -l "$TMP/broken.1" >/dev/null 2>"$TMP/broken.err"
[[ -s $TMP/broken.err ]] || fail "man --warnings printed nothing for a broken page; cannot check pages"
pages=$(grep '^/usr/share/man/' "$TMP/installed-list" | grep '\.gz$')
[[ $(wc -w <<<"$pages") -eq 3 ]] || fail "expected 3 installed man pages, found: $pages"
for page in $pages; do
  for width in 80 120; do
    MAN_KEEP_STDERR=1 MANWIDTH=$width timeout 30 man --warnings -l "$page" >"$TMP/page.txt" \
      2>"$TMP/page.err" || fail "man -l $page failed: $(cat "$TMP/page.err")"
    [[ ! -s $TMP/page.err ]] || fail "man --warnings -l $page (width $width) warns:$(echo; cat "$TMP/page.err")"
  done
  for section in NAME SYNOPSIS DESCRIPTION FILES EXAMPLES "SEE ALSO"; do
    grep -q "^$section" "$TMP/page.txt" || fail "$page has no $section section"
  done
  if [[ $page != */man5/* ]]; then
    for section in "EXIT STATUS" SIGNALS; do
      grep -q "^$section" "$TMP/page.txt" || fail "$page has no $section section"
    done
  fi
done
# man finds them by name, as users ask for them.
for query in "8 pipegated" "1 pipegate" "5 pipegated.toml"; do
  # shellcheck disable=SC2086  # Section and name are two words.
  found=$(timeout 30 man -w $query 2>&1) || fail "man -w $query: $found"
  grep -qxF -- "$found" <<<"$pages" || fail "man -w $query finds $found, not the installed page"
done
MANWIDTH=80 timeout 30 man 8 pipegated >"$TMP/pipegated.txt" 2>&1 || fail "man 8 pipegated failed"
grep -q "SIGUSR1" "$TMP/pipegated.txt" || fail "man 8 pipegated does not describe SIGUSR1"
note "man pages: $(tr '\n' ' ' <<<"$pages")without warnings"

# ---- Bash completion ----
# Runs completion function $1 with COMP_WORDS = the other arguments (the last one is the word
# under the cursor, split as readline splits at ':' and '='), in a bash that has loaded nothing
# but the installed file; prints COMPREPLY, sorted, one per line.
complete_words() {
  # shellcheck disable=SC2016  # The script is for the inner bash.
  env -i PATH="$PATH" HOME="$TMP" timeout 30 bash --norc --noprofile -c '
    source "$1" || exit 1
    complete -p pipegate | grep -q -- "-F _pipegate pipegate" || exit 2
    complete -p pipegated | grep -q -- "-F _pipegated pipegated" || exit 2
    fn=$2
    shift 2
    COMP_WORDS=("$@")
    COMP_CWORD=$((${#COMP_WORDS[@]} - 1))
    COMPREPLY=()
    "$fn" || exit 3
    printf "%s\n" "${COMPREPLY[@]}"' _ "$COMPLETION" "$@" | sort | sed '/^$/d'
}
# Expects completion $2... to give exactly the words of $1 (any order).
expect_completion() {
  local want=$1 got
  shift
  got=$(complete_words "$@")
  [[ $got == "$(tr ' ' '\n' <<<"$want" | sort | sed '/^$/d')" ]] ||
    fail "completing '${*:2}' gave [$(tr '\n' ' ' <<<"$got")], expected [$want]"
}
mkdir -p "$TMP/pki" && : >"$TMP/pki/client.crt" && : >"$TMP/pki/client.key" && : >"$TMP/pki/ca.crt"
expect_completion "cat connect ls mount stat write" _pipegate pipegate ""
expect_completion "length lines" _pipegate pipegate connect --messages ""
expect_completion "cat connect" _pipegate pipegate c
expect_completion "fifo unix" _pipegate pipegate mount --as ""
expect_completion "fifo" _pipegate pipegate mount --as = f
expect_completion "json text" _pipegate pipegate --log-format ""
expect_completion "pipe://" _pipegate pipegate cat pi
expect_completion "//" _pipegate pipegate cat pipe :
expect_completion "$TMP/pki/client.crt $TMP/pki/client.key" _pipegate pipegate cat --cert "$TMP/pki/cl"
expect_completion "$TMP/pki/ca.crt" _pipegate pipegate --ca = "$TMP/pki/ca"
expect_completion "$TMP/pki/client.key" _pipegate pipegate mount pipe : //gw/x "$TMP/pki/client.k"
expect_completion "root" _pipegate pipegate mount --owner roo
expect_completion "--lines" _pipegate pipegate write --li
expect_completion "" _pipegate pipegate write --as
expect_completion "$EXAMPLE" _pipegated pipegated --check-config "$ETC/pipegated.t"
expect_completion "json" _pipegated pipegated --log-format = j
# Every option and command the installed programs list in --help is offered.
help_options() {
  timeout 30 "$@" --help 2>&1 | grep -oE '^  (-[A-Za-z], ?)?--[a-z][a-z-]*' | grep -oE -- '--?[A-Za-z][a-z-]*'
}
offered=$(complete_words _pipegate pipegate -)
for option in $(help_options /usr/bin/pipegate); do
  grep -qxF -- "$option" <<<"$offered" || fail "completion of 'pipegate -' lacks $option"
done
commands=$(timeout 30 /usr/bin/pipegate --help | sed -n '/^Subcommands:/,$p' | awk 'NR > 1 && NF { print $1 }')
[[ -n $commands ]] || fail "pipegate --help lists no commands"
for command in $commands; do
  grep -qxF -- "$command" <<<"$(complete_words _pipegate pipegate "")" ||
    fail "completion of 'pipegate ' lacks the command $command"
  offered=$(complete_words _pipegate pipegate "$command" -)
  for option in $(help_options /usr/bin/pipegate "$command"); do
    grep -qxF -- "$option" <<<"$offered" || fail "completion of 'pipegate $command -' lacks $option"
  done
done
offered=$(complete_words _pipegated pipegated -)
for option in $(help_options "$PIPEGATED"); do
  grep -qxF -- "$option" <<<"$offered" || fail "completion of 'pipegated -' lacks $option"
done
note "bash completion: commands, options, values, files"

# ---- systemd-analyze verify ----
# verify exits 0 for a key or value it ignores and only prints it, so any output is a failure.
# Without a running systemd it still loads the units and their dependencies from the unit
# path, checks every key, and checks that the programs and the man pages in Documentation=
# exist. A misspelt copy must make it talk, or the check would be blind here.
verify() {
  SYSTEMD_LOG_COLOR=0 timeout 60 systemd-analyze verify "$@" >"$TMP/verify.out" 2>&1
  local rc=$?
  [[ $rc -eq 0 && ! -s $TMP/verify.out ]]
}
mkdir -p "$TMP/units"
sed 's/^NotifyAccess=/NotifyAcess=/' "$UNITDIR/pipegated.service" >"$TMP/units/pipegated.service"
if verify "$TMP/units/pipegated.service"; then
  fail "systemd-analyze verify said nothing about a misspelt key; it cannot check the units here"
fi
verify "$UNITDIR/pipegated.service" ||
  fail "systemd-analyze verify $UNITDIR/pipegated.service:$(echo; cat "$TMP/verify.out")"
# A template is verified as an instance, loaded by name from the unit path.
verify pipegate-mount@check.service ||
  fail "systemd-analyze verify pipegate-mount@check.service:$(echo; cat "$TMP/verify.out")"
note "systemd-analyze verify: both units clean"

# ---- Purge ----
for f in "${generated[@]}"; do rm -f "$f"; done
generated=()
timeout 300 dpkg --purge pipegate >"$TMP/purge.log" 2>&1 || fail "dpkg --purge failed:$(echo; cat "$TMP/purge.log")"
installed=0
status=$(dpkg-query -W -f='${db:Status-Status}' pipegate 2>/dev/null || true)
[[ -z $status || $status == not-installed ]] || fail "after the purge dpkg reports pipegate as '$status'"
left=()
while read -r p; do
  [[ $p == /. ]] && continue
  [[ -e $p || -L $p ]] || continue
  # A directory stays if it was there before (/usr/bin, or /lib as a symlink to /usr/lib) or
  # another package owns it.
  grep -qxF -- "$p" "$TMP/dirs-before" && continue
  [[ -d $p ]] && timeout 30 dpkg-query -S "$p" >/dev/null 2>&1 && continue
  left+=("$p")
done <"$TMP/installed-list"
((${#left[@]} == 0)) || fail "the purge left: ${left[*]}"
[[ ! -e $ETC ]] || fail "the purge left $ETC: $(ls -A "$ETC")"
getent passwd pipegate >/dev/null && fail "the purge left the user pipegate"
getent group pipegate >/dev/null && fail "the purge left the group pipegate"
note "purge: no file, no $ETC, no user or group left"
echo "$NAME  PASS ($(basename "$DEB"): $deb_bytes bytes, $deb_files files)"
exit 0
