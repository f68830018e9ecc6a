#!/usr/bin/env bash
# The man pages (docs/man) and bash completions (deploy/completion) against the binaries:
# every subcommand and flag that `kiln ... --help` and `kilnd ... --help` print is in the man
# page and offered by the completion (run in bash through COMP_WORDS, as `complete -p`
# registers it), the completion offers nothing the binary lacks, and groff renders the pages
# without warnings. A command or flag added without its docs fails here; the fix is
#   packaging/cli_docs.py man-update build/kiln docs/man/kiln.1   (and kilnd / kilnd.8)
#   packaging/cli_docs.py completion build/kiln kiln > deploy/completion/kiln
source "$(dirname "$0")/lib.sh"
command -v groff >/dev/null || { log "skip: groff missing"; exit 77; }
DOCS=$KILN_ROOT/packaging/cli_docs.py

for prog in kiln:1 kilnd:8; do
  name=${prog%:*} section=${prog#*:}
  page=$KILN_ROOT/docs/man/$name.$section
  comp=$KILN_ROOT/deploy/completion/$name
  python3 "$DOCS" tree "$KILN_BUILD/$name" >"$WORK/$name.tree"
  [[ $(wc -l <"$WORK/$name.tree") -gt 3 ]] && ok || fail "$name: no command tree from --help"

  # The man page, rendered as text: each command's synopsis heading and each flag appear.
  MANWIDTH=200 groff -ww -z -man "$page" 2>"$WORK/$name.groff" && [[ ! -s $WORK/$name.groff ]] &&
    ok || fail "$name.$section: groff warnings: $(head -5 "$WORK/$name.groff")"
  groff -man -Tascii -rLL=200n "$page" 2>/dev/null | col -b >"$WORK/$name.txt"
  while IFS='|' read -r path flags _; do
    if [[ -n $path ]]; then
      grep -qE "^   $name $path( |\$)" "$WORK/$name.txt" &&
        ok || fail "$name.$section lacks the command '$name $path'"
    fi
    for f in $flags; do
      [[ $f == -h || $f == --help ]] && continue
      grep -qE -- "(^|[ ,])$f([ ,]|$)" "$WORK/$name.txt" && ok ||
        fail "$name.$section lacks '$name $path $f'"
    done
  done <"$WORK/$name.tree"
  # ... and documents no command the binary does not have.
  # (a heading is "name cmd sub [OPTIONS] ...": the words before "[" name the command)
  grep -E "^   $name [a-z][a-z0-9-]*( [a-z][a-z0-9-]*)* \\[" "$WORK/$name.txt" |
    sed -E "s/^   $name //; s/ \\[.*//" | sort -u |
    while read -r path; do
      cut -d'|' -f1 "$WORK/$name.tree" | grep -qxF "$path" || echo "$path"
    done >"$WORK/$name.unknown"
  [[ ! -s $WORK/$name.unknown ]] && ok ||
    fail "$name.$section documents commands the binary lacks: $(head -3 "$WORK/$name.unknown")"

  # The completion, sourced into a fresh bash and driven like readline drives it.
  cat >"$WORK/complete.sh" <<EOS
source "$comp"
spec=\$(complete -p $name) || exit 3
fn=\$(sed -E 's/.*-F ([^ ]+) .*/\1/' <<<"\$spec")
# complete_words WORD... : COMPREPLY for completing the last word
complete_words() {
  COMP_WORDS=("\$@"); COMP_CWORD=\$((\${#COMP_WORDS[@]} - 1))
  COMP_LINE="\${COMP_WORDS[*]}"; COMP_POINT=\${#COMP_LINE}
  COMPREPLY=()
  "\$fn" "$name" "\${COMP_WORDS[COMP_CWORD]}" "\${COMP_WORDS[COMP_CWORD-1]}"
  printf '%s\n' "\${COMPREPLY[@]}" | sort
}
while IFS='|' read -r path flags subs; do
  # offered words at "name path <TAB>" and "name path -<TAB>"
  got=\$(complete_words $name \$path ""; complete_words $name \$path -)
  want=\$(printf '%s\n' \$subs \$flags | sort -u)
  if [[ "\$(sort -u <<<"\$got")" != "\$want" ]]; then
    echo "'$name \$path': completion offers [\$(sort -u <<<"\$got" | tr '\n' ' ')] but --help has [\$(tr '\n' ' ' <<<"\$want")]"
  fi
done <"$WORK/$name.tree"
EOS
  bash --norc --noprofile "$WORK/complete.sh" >"$WORK/$name.comp" 2>&1 && [[ ! -s $WORK/$name.comp ]] &&
    ok || fail "$name completion: $(head -5 "$WORK/$name.comp")"
done

# The page without a generated part (the agent package's wrapper).
MANWIDTH=200 groff -ww -z -man "$KILN_ROOT/docs/man/kiln-build-initramfs.1" 2>"$WORK/kbi.groff" &&
  [[ ! -s $WORK/kbi.groff ]] && ok || fail "kiln-build-initramfs.1: groff warnings: $(head -5 "$WORK/kbi.groff")"

# A concrete case, so that a completion that offered everything everywhere would fail too.
got=$(bash --norc -c "source '$KILN_ROOT/deploy/completion/kiln'
  COMP_WORDS=(kiln machine b); COMP_CWORD=2; _kiln kiln b machine; echo \"\${COMPREPLY[*]}\"")
expect_eq "$got" "bmc" "kiln machine b<TAB>"
got=$(bash --norc -c "source '$KILN_ROOT/deploy/completion/kilnd'
  COMP_WORDS=(kilnd --config x.json t); COMP_CWORD=3; _kilnd kilnd t x.json; echo \"\${COMPREPLY[*]}\"")
expect_eq "$got" "token" "kilnd --config x.json t<TAB>"
finish
