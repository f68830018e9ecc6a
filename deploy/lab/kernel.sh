# deploy/lab/kernel.sh — sourced: fetches Debian's kernel package (linux-image-amd64's
# current dependency) with `apt-get download` into $KILN_LAB_CACHE once, and unpacks only
# /boot and the modules.* index files; `kernel_modules NAMES...` then extracts the named
# modules with their dependencies (from modules.dep) and prints them in load order.
# Nothing is installed on the host and nothing goes into /boot.
: "${KILN_LAB_CACHE:=$(cd "$(dirname "${BASH_SOURCE[0]}")/../.." && pwd)/var/lab-cache}"
mkdir -p "$KILN_LAB_CACHE"

# deb_of PKG — the path of PKG's .deb in the cache, downloaded once.
deb_of() {
  local pkg=$1 deb
  deb=$(ls "$KILN_LAB_CACHE/${pkg}"_*.deb 2>/dev/null | head -n1 || true)
  if [[ -z $deb ]]; then
    (cd "$KILN_LAB_CACHE" && { apt-get download "$pkg" >/dev/null 2>&1 ||
      { apt-get update -qq >/dev/null 2>&1 || true; apt-get download "$pkg" >&2; }; })
    deb=$(ls "$KILN_LAB_CACHE/${pkg}"_*.deb | head -n1)
  fi
  echo "$deb"
}

# kernel_unpack — sets KPKG, KVER, KROOT (holding boot/vmlinuz-$KVER, modules.builtin and
# the package's list of .ko files).
kernel_unpack() {
  KPKG=${KILN_KERNEL_PKG:-$(apt-cache depends linux-image-amd64 2>/dev/null |
    awk '/Depends: linux-image-[0-9]/{print $2; exit}')}
  [[ -n $KPKG ]] || { echo "cannot resolve linux-image-amd64 (apt-get update?)" >&2; return 1; }
  KROOT=$KILN_LAB_CACHE/$KPKG
  KDEB=$(deb_of "$KPKG")
  if [[ ! -e $KROOT/.unpacked ]]; then
    rm -rf "$KROOT"
    mkdir -p "$KROOT"
    dpkg-deb --fsys-tarfile "$KDEB" | tar -x -C "$KROOT" --wildcards './boot/vmlinuz-*' \
      './lib/modules/*/modules.builtin'
    dpkg-deb -c "$KDEB" | awk '{print $6}' | grep '\.ko$' >"$KROOT/.ko-list"
    touch "$KROOT/.unpacked"
  fi
  KVER=$(ls "$KROOT/lib/modules" | head -n1)
  [[ -s $KROOT/boot/vmlinuz-$KVER ]]
}

# kernel_modules NAME... — extracts NAME and its dependencies (the depends= field of each
# module's .modinfo; modules.dep is made by depmod at install time, not shipped) into $KROOT
# and prints their paths (relative to lib/modules/$KVER) in load order, dependencies first.
# Built-in modules are skipped; an unknown name is an error. One pass over the package per
# level of dependencies.
kernel_modules() {
  local -A path_of=() seen=()
  local p key m n
  while IFS= read -r p; do
    key=${p##*/}
    key=${key%.ko}
    path_of[${key//-/_}]=${p#./lib/modules/$KVER/}
  done <"$KROOT/.ko-list"
  local mdir=$KROOT/lib/modules/$KVER
  builtin() { grep -qE "/${1//_/[-_]}\.ko\$" "$mdir/modules.builtin"; }
  deps() { tr '\0' '\n' <"$mdir/${path_of[$1]}" | sed -n 's/^depends=//p' | tr ',' ' '; }
  local todo=("$@") next missing
  while ((${#todo[@]})); do
    missing=()
    next=()
    for m in "${todo[@]}"; do
      n=${m//-/_}
      [[ -n ${seen[$n]:-} ]] && continue
      if [[ -z ${path_of[$n]:-} ]]; then
        builtin "$n" && { seen[$n]=builtin; continue; }
        echo "kernel module $m is not in $KPKG" >&2
        return 1
      fi
      seen[$n]=1
      [[ -e $mdir/${path_of[$n]} ]] || missing+=("./lib/modules/$KVER/${path_of[$n]}")
      next+=("$n")
    done
    if ((${#missing[@]})); then
      dpkg-deb --fsys-tarfile "$KDEB" | tar -x -C "$KROOT" "${missing[@]}"
    fi
    todo=()
    for n in "${next[@]}"; do
      for m in $(deps "$n"); do todo+=("$m"); done
    done
  done
  local -A emitted=()
  local order=()
  emit() {
    local n=${1//-/_} d
    [[ -n ${emitted[$n]:-} || ${seen[$n]} == builtin ]] && return 0
    emitted[$n]=1
    for d in $(deps "$n"); do emit "$d"; done
    order+=("${path_of[$n]}")
  }
  for m in "$@"; do emit "$m"; done
  printf '%s\n' "${order[@]}"
}
